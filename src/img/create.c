/* wisp-img create: a new raw or qcow2 image, optionally over a backing file. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "img/img.h"

static const char create_help[] =
    "Creates the image 'filename' of 'size' bytes.\n"
    "\n"
    "  -f fmt          format: qcow2 or raw (default raw)\n"
    "  -b backing_file the new image reads unallocated clusters from backing_file (relative\n"
    "                  names are relative to the new image's directory)\n"
    "  -F backing_fmt  format of the backing file (probed when omitted)\n"
    "  -u              do not open the backing file (size must then be given)\n"
    "  -o options      cluster_size=, preallocation=off|metadata|falloc|full, compat=0.10|1.1,\n"
    "                  lazy_refcounts=on|off, extended_l2=on|off, refcount_bits=,\n"
    "                  compression_type=zlib|zstd, backing_file=, backing_fmt=, size=\n"
    "  -q              quiet\n"
    "\n"
    "Without a size, the size of the backing file is used.\n";

static const char *const prealloc_names[] = {"off", "metadata", "falloc", "full"};

static void print_formatting(const char *path, const struct img_create_opts *o)
{
    printf("Formatting '%s', fmt=%s", path, o->format);
    if (!strcmp(o->format, "qcow2"))
        printf(" cluster_size=%u extended_l2=%s compression_type=%s",
               o->cluster_size ? o->cluster_size : 65536, o->extended_l2 ? "on" : "off",
               o->compression_type ? o->compression_type : "zlib");
    printf(" size=%" PRIu64, o->size);
    if (o->backing_file)
        printf(" backing_file=%s", o->backing_file);
    if (o->backing_format)
        printf(" backing_fmt=%s", o->backing_format);
    if (!strcmp(o->format, "qcow2"))
        printf(" lazy_refcounts=%s refcount_bits=%u", o->lazy_refcounts ? "on" : "off",
               o->refcount_bits ? o->refcount_bits : 16);
    printf(" preallocation=%s\n", prealloc_names[o->prealloc]);
}

/* Without -u the backing file must open; its size is the default size. */
static int check_backing(const char *path, struct img_create_opts *o)
{
    char full[4096];
    const char *b = o->backing_file;
    if (b[0] != '/') {
        const char *slash = strrchr(path, '/');
        snprintf(full, sizeof(full), "%.*s%s", slash ? (int)(slash - path + 1) : 0, path, b);
        b = full;
    }
    struct block_dev *bs;
    struct img_open_args a = {.format = o->backing_format, .read_only = true};
    if (img_open(&bs, b, &a) < 0) {
        img_error("Could not open backing image '%s'", o->backing_file);
        return -1;
    }
    if (!o->size_given) {
        o->size = bs->size;
        o->size_given = true;
    }
    if (!o->backing_format)
        o->backing_format = bs->drv->name;
    block_close(bs);
    return 0;
}

int img_create_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {0}};
    struct img_create_opts o = {.format = "raw"};
    bool quiet = false, unsafe = false;
    int c;
    while ((c = getopt_long(argc, argv, "hf:b:F:uo:q", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("create", create_help);
        case 'f':
            o.format = optarg;
            break;
        case 'b':
            o.backing_file = optarg;
            break;
        case 'F':
            o.backing_format = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'o':
            if (!strcmp(optarg, "help")) {
                puts(create_help + 0);
                return IMG_EXIT_OK;
            }
            if (img_parse_create_opts(optarg, &o) < 0)
                return IMG_EXIT_ERROR;
            break;
        case 'q':
            quiet = true;
            break;
        default:
            return img_usage_error("create", "invalid option");
        }
    }
    if (optind >= argc)
        return img_usage_error("create", "Expecting image file name");
    const char *path = argv[optind++];
    if (optind < argc) {
        if (img_parse_size(argv[optind++], "image size", &o.size) < 0)
            return IMG_EXIT_ERROR;
        o.size_given = true;
    }
    if (optind < argc)
        return img_usage_error("create", "Unexpected argument: %s", argv[optind]);
    if (strcmp(o.format, "raw") && !block_driver_find(o.format)) {
        img_error("Unknown file format '%s'", o.format);
        return IMG_EXIT_ERROR;
    }
    if (o.backing_file && !unsafe && check_backing(path, &o) < 0)
        return IMG_EXIT_ERROR;
    if (!o.size_given) {
        img_error("%s: Size must be specified", path);
        return IMG_EXIT_ERROR;
    }
    if (!quiet)
        print_formatting(path, &o);
    struct wisp_err err = {0};
    if (img_create_image(path, &o, &err) < 0) {
        img_error("%s: %s", path, err.msg);
        return IMG_EXIT_ERROR;
    }
    return IMG_EXIT_OK;
}
