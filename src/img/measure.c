/* wisp-img measure: how large an image of a given format and options would be, for a new
 * disk (--size) or for the data of an existing image (qemu-img measure). */
#include <getopt.h>
#include <jansson.h>
#include <string.h>

#include "img/img.h"

static const char measure_help[] =
    "Prints the space a new image needs: 'required size' for the data (of 'filename', or\n"
    "none with --size) and 'fully allocated size' when every cluster is allocated.\n"
    "\n"
    "  --size N        measure an empty image of N bytes\n"
    "  -f fmt          format of 'filename'\n"
    "  -O output_fmt   format to measure for: raw (default) or qcow2\n"
    "  -o options      creation options (cluster_size=, preallocation=, extended_l2=, ...)\n"
    "  --output=json   JSON (also --json)\n";

/* Bytes of target clusters that would hold data: runs that do not read as zeroes, rounded
 * out to whole clusters of `cs` bytes (as qemu-img measure counts). */
static int count_data(struct block_dev *src, uint64_t cs, uint64_t *bytes)
{
    uint64_t clusters = 0, last = UINT64_MAX;
    *bytes = 0;
    for (uint64_t p = 0; p < src->size;) {
        uint64_t pnum, host;
        int d;
        struct block_dev *l;
        struct wisp_err err = {0};
        int st = img_status_above(src, NULL, p, src->size - p, &pnum, &host, &d, &l, &err);
        if (st < 0) {
            img_error("%s", err.msg);
            return st;
        }
        if (!(st & BLOCK_STATUS_ZERO)) {
            uint64_t first = p / cs, end = (p + pnum - 1) / cs;
            clusters += end - first + 1 - (first == last);
            last = end;
        }
        p += pnum;
    }
    *bytes = clusters * cs;
    return 0;
}

int img_measure_main(int argc, char **argv)
{
    enum { OPT_OUTPUT = 256, OPT_JSON, OPT_SIZE };
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                             {"output", required_argument, NULL, OPT_OUTPUT},
                                             {"json", no_argument, NULL, OPT_JSON},
                                             {"size", required_argument, NULL, OPT_SIZE},
                                             {0}};
    const char *fmt = NULL, *opts = NULL, *out_fmt = "raw";
    bool json = false, have_size = false;
    uint64_t size = 0;
    int c, opt_r;
    while ((c = getopt_long(argc, argv, "hf:O:o:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("measure", measure_help);
        case 'f':
            fmt = optarg;
            break;
        case 'O':
            out_fmt = optarg;
            break;
        case 'o':
            opts = optarg;
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if ((opt_r = img_parse_output("measure", optarg, &json)) != 0)
                return opt_r;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_SIZE:
            if (img_parse_size(optarg, "image size", &size) < 0)
                return IMG_EXIT_ERROR;
            have_size = true;
            break;
        default:
            return img_usage_error("measure", "invalid option");
        }
    }
    if (have_size == (optind < argc) || argc - optind > 1)
        return img_usage_error("measure", "Either --size N or one filename must be specified.");
    struct img_create_opts o = {.format = out_fmt};
    if (opts && img_parse_create_opts(opts, &o) < 0)
        return IMG_EXIT_ERROR;
    struct block_dev *src = NULL;
    struct img_open_args a = {.format = fmt, .read_only = true};
    if (!have_size && img_open(&src, argv[optind], &a) < 0)
        return IMG_EXIT_ERROR;
    if (src)
        size = src->size;
    uint64_t req = 0, full = 0;
    int r = -1;
    if (!strcmp(out_fmt, "raw")) { /* qemu-img: a raw target needs the whole virtual size */
        req = full = size;
        r = 0;
    } else if (!strcmp(out_fmt, "qcow2")) {
        struct qcow2_create_opts q = {.size = size,
                                      .cluster_size = o.cluster_size,
                                      .version = o.version,
                                      .refcount_bits = o.refcount_bits,
                                      .extended_l2 = o.extended_l2,
                                      .prealloc = (enum qcow2_prealloc)o.prealloc};
        struct qcow2_measure_result m;
        struct wisp_err err = {0};
        uint64_t cs = o.cluster_size ? o.cluster_size : 65536, data = 0;
        r = qcow2_measure(&q, NULL, &m, &err);
        if (r < 0)
            img_error("%s", err.msg);
        else if (src)
            r = count_data(src, cs, &data);
        /* qemu-img's rule: the metadata of a fully allocated image plus the data clusters */
        uint64_t vsize = (size + cs - 1) / cs * cs;
        full = m.fully_allocated;
        req = full - (full > vsize ? vsize : full) + data;
        if (o.prealloc)
            req = full;
    } else {
        img_error("Unknown file format '%s'", out_fmt);
    }
    block_close(src);
    if (r < 0)
        return IMG_EXIT_ERROR;
    if (json) {
        json_t *j = json_pack("{s:I,s:I}", "required", (json_int_t)req, "fully-allocated",
                              (json_int_t)full);
        if (strcmp(out_fmt, "raw"))
            json_object_set_new(j, "bitmaps", json_integer(0));
        json_dumpf(j, stdout, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
        printf("\n");
        json_decref(j);
    } else {
        printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", req, full);
    }
    return IMG_EXIT_OK;
}
