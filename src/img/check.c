/* wisp-img check: consistency check of a qcow2 image (refcounts, L1/L2 tables), with repair of
 * leaks (-r leaks) or of everything (-r all). Exit codes as qemu-img: 0 clean, 1 check failed,
 * 2 corruptions, 3 leaks, 63 format without checks. */
#include <getopt.h>
#include <jansson.h>
#include <string.h>

#include "img/img.h"

#define CHECK_EXIT_CORRUPT     2
#define CHECK_EXIT_LEAKS       3
#define CHECK_EXIT_UNSUPPORTED 63

static const char check_help[] =
    "Checks the image 'filename' for consistency.\n"
    "\n"
    "  -f fmt          image format (probed when omitted)\n"
    "  -r leaks|all    repair leaked clusters only, or leaks and corruptions\n"
    "  --output=json   JSON as qemu-img prints it (also --json)\n"
    "  -q              quiet\n"
    "\n"
    "Exit status: 0 no problems, 1 the check could not complete, 2 corruptions, 3 leaked\n"
    "clusters (waste of space, no harm to data), 63 the format has no checks.\n";

static void report_line(void *opaque, const char *msg)
{
    bool quiet = *(bool *)opaque;
    if (!quiet)
        fprintf(stderr, "%s\n", msg);
}

static void print_human(const char *name, const struct qcow2_check_result *r)
{
    if (!r->corruptions && !r->leaks && !r->check_errors)
        printf("No errors were found on the image.\n");
    if (r->corruptions)
        printf("\n%" PRIu64 " errors were found on the image.\n"
               "Data may be corrupted, or further writes to the image may corrupt it.\n",
               r->corruptions);
    if (r->leaks)
        printf("\n%" PRIu64 " leaked clusters were found on the image.\n"
               "This means waste of disk space, but no harm to data.\n",
               r->leaks);
    if (r->check_errors)
        printf("\n%" PRIu64 " internal errors have occurred during the check.\n", r->check_errors);
    if (r->total_clusters)
        printf(
            "%" PRIu64 "/%" PRIu64 " = %.2f%% allocated, %.2f%% fragmented, %.2f%% compressed "
            "clusters\n",
            r->allocated_clusters, r->total_clusters,
            r->allocated_clusters * 100.0 / (double)r->total_clusters,
            r->allocated_clusters ? r->fragmented_clusters * 100.0 / (double)r->allocated_clusters
                                  : 0.0,
            r->allocated_clusters ? r->compressed_clusters * 100.0 / (double)r->allocated_clusters
                                  : 0.0);
    if (r->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
    (void)name;
}

static void print_json(const char *name, const struct qcow2_check_result *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "image-end-offset", json_integer((json_int_t)r->image_end_offset));
    json_object_set_new(o, "total-clusters", json_integer((json_int_t)r->total_clusters));
    json_object_set_new(o, "check-errors", json_integer((json_int_t)r->check_errors));
    json_object_set_new(o, "allocated-clusters", json_integer((json_int_t)r->allocated_clusters));
    json_object_set_new(o, "filename", json_string(name));
    json_object_set_new(o, "format", json_string("qcow2"));
    json_object_set_new(o, "fragmented-clusters", json_integer((json_int_t)r->fragmented_clusters));
    json_object_set_new(o, "compressed-clusters", json_integer((json_int_t)r->compressed_clusters));
    if (r->leaks)
        json_object_set_new(o, "leaks", json_integer((json_int_t)r->leaks));
    if (r->corruptions)
        json_object_set_new(o, "corruptions", json_integer((json_int_t)r->corruptions));
    if (r->leaks_fixed)
        json_object_set_new(o, "leaks-fixed", json_integer((json_int_t)r->leaks_fixed));
    if (r->corruptions_fixed)
        json_object_set_new(o, "corruptions-fixed", json_integer((json_int_t)r->corruptions_fixed));
    json_dumpf(o, stdout, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
    printf("\n");
    json_decref(o);
}

static int run_check(struct block_dev *bs, int fix, bool json, bool quiet)
{
    struct qcow2_check_result r = {.report = report_line, .opaque = &quiet};
    struct wisp_err err = {0};
    /* with -r the library repairs, then checks again: r holds that second pass */
    if (qcow2_check(bs, fix, &r, &err) < 0) {
        img_error("Check failed: %s", err.msg);
        return IMG_EXIT_ERROR;
    }
    if (fix && (r.leaks_fixed || r.corruptions_fixed) && !json && !quiet)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRIu64 " leaked clusters\n    %" PRIu64 " corruptions\n\n"
               "Double checking the fixed image now...\n",
               r.leaks_fixed, r.corruptions_fixed);
    if (json)
        print_json(bs->filename, &r);
    else if (!quiet)
        print_human(bs->filename, &r);
    if (r.check_errors)
        return IMG_EXIT_ERROR;
    if (r.corruptions && fix == 1) /* QCOW2_FIX_LEAKS: refused while there are errors */
        img_error("%s: leaks not repaired: the image has %" PRIu64 " errors (repair them with "
                  "-r all)",
                  bs->filename, r.corruptions);
    else if (r.corruptions && fix)
        img_error("%s: %" PRIu64 " errors remain after the repair", bs->filename, r.corruptions);
    if (r.corruptions)
        return CHECK_EXIT_CORRUPT;
    if (r.leaks)
        return CHECK_EXIT_LEAKS;
    return IMG_EXIT_OK;
}

int img_check_main(int argc, char **argv)
{
    enum { OPT_OUTPUT = 256, OPT_JSON };
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                             {"output", required_argument, NULL, OPT_OUTPUT},
                                             {"json", no_argument, NULL, OPT_JSON},
                                             {"repair", required_argument, NULL, 'r'},
                                             {0}};
    const char *fmt = NULL;
    bool json = false, quiet = false;
    int fix = 0, c, r;
    while ((c = getopt_long(argc, argv, "hf:r:qU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("check", check_help);
        case 'f':
            fmt = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'U':
            break;
        case 'r':
            if (!strcmp(optarg, "leaks"))
                fix = 1; /* QCOW2_FIX_LEAKS */
            else if (!strcmp(optarg, "all"))
                fix = 3; /* QCOW2_FIX_ALL */
            else
                return img_usage_error("check",
                                       "Unknown option value for -r "
                                       "(expecting 'leaks' or 'all'): %s",
                                       optarg);
            break;
        case OPT_OUTPUT:
            if ((r = img_parse_output("check", optarg, &json)) != 0)
                return r;
            break;
        case OPT_JSON:
            json = true;
            break;
        default:
            return img_usage_error("check", "invalid option");
        }
    }
    if (optind != argc - 1)
        return img_usage_error("check", "Expecting one image file name");
    struct block_dev *bs;
    /* repair: damaged tables and the corrupt bit do not stop the open; only check writes */
    struct img_open_args a = {
        .format = fmt, .read_only = fix == 0, .no_backing = true, .repair = true};
    if (img_open(&bs, argv[optind], &a) < 0)
        return IMG_EXIT_ERROR;
    int rc = CHECK_EXIT_UNSUPPORTED;
    if (bs->drv == &qcow2_driver)
        rc = run_check(bs, fix, json, quiet);
    if (rc == CHECK_EXIT_UNSUPPORTED)
        img_error("This image format does not support checks");
    block_close(bs);
    return rc;
}
