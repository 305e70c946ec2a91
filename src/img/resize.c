/* wisp-img resize: grows or (with --shrink) shrinks an image; refuses to cut off data unless
 * --force. Sizes may be absolute or relative (+10G, -1G). */
#include <getopt.h>
#include <string.h>

#include "img/img.h"

static const char resize_help[] =
    "Changes the virtual size of 'filename'.\n"
    "\n"
    "  size            new size, or +size / -size relative to the current one\n"
    "  -f fmt          image format (probed when omitted)\n"
    "  --shrink        allow making the image smaller\n"
    "  --force         shrink even when the part cut off holds data (it is lost)\n"
    "  -q              quiet\n";

/* Does [from, to) of bs hold anything but zeroes (in this node)? */
static int tail_has_data(struct block_dev *bs, uint64_t from, uint64_t to, bool *data)
{
    *data = false;
    struct wisp_err err = {0};
    for (uint64_t p = from; p < to;) {
        uint64_t pnum, host;
        int st = block_status(bs, p, to - p, &pnum, &host, &err);
        if (st < 0) {
            img_error("%s", err.msg);
            return st;
        }
        if ((st & BLOCK_STATUS_ALLOCATED) && !(st & BLOCK_STATUS_ZERO)) {
            *data = true;
            return 0;
        }
        p += pnum;
    }
    return 0;
}

static int parse_new_size(const char *arg, uint64_t cur, uint64_t *size)
{
    uint64_t v;
    int sign = arg[0] == '+' ? 1 : arg[0] == '-' ? -1 : 0;
    if (img_parse_size(arg + (sign != 0), "image size", &v) < 0)
        return -1;
    if (sign > 0)
        *size = cur + v;
    else if (sign < 0) {
        if (v > cur) {
            img_error("New image size must be positive");
            return -1;
        }
        *size = cur - v;
    } else
        *size = v;
    return 0;
}

int img_resize_main(int argc, char **argv)
{
    enum { OPT_SHRINK = 256, OPT_FORCE, OPT_PREALLOC };
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"shrink", no_argument, NULL, OPT_SHRINK},
        {"force", no_argument, NULL, OPT_FORCE},
        {"preallocation", required_argument, NULL, OPT_PREALLOC},
        {0}};
    const char *fmt = NULL;
    bool shrink = false, force = false, quiet = false;
    int c;
    /* "-1G" must not be taken for an option: stop at the first non-option */
    while ((c = getopt_long(argc, argv, "+hf:q", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("resize", resize_help);
        case 'f':
            fmt = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case OPT_SHRINK:
            shrink = true;
            break;
        case OPT_FORCE:
            force = true;
            break;
        case OPT_PREALLOC:
            if (strcmp(optarg, "off"))
                return img_usage_error("resize", "only --preallocation=off is supported");
            break;
        default:
            return img_usage_error("resize", "invalid option");
        }
    }
    if (argc - optind != 2)
        return img_usage_error("resize", "Expecting image file name and size");
    struct block_dev *bs;
    struct img_open_args a = {.format = fmt, .no_backing = true, .preflight = true};
    if (img_open(&bs, argv[optind], &a) < 0)
        return IMG_EXIT_ERROR;
    uint64_t size;
    int rc = IMG_EXIT_ERROR;
    if (parse_new_size(argv[optind + 1], bs->size, &size) < 0)
        goto out;
    size = (size + 511) / 512 * 512;
    if (size < bs->size) {
        bool data;
        if (!shrink) {
            img_error("Use the --shrink option to perform a shrink operation.");
            goto out;
        }
        if (tail_has_data(bs, size, bs->size, &data) < 0)
            goto out;
        if (data && !force) {
            img_error("%s: the part beyond %" PRIu64 " bytes holds data; it would be lost "
                      "(use --force to shrink anyway)",
                      bs->filename, size);
            goto out;
        }
    }
    struct wisp_err err = {0};
    if (block_truncate(bs, size, true, &err) < 0 || block_flush(bs, &err) < 0) {
        img_error("%s", err.msg);
        goto out;
    }
    if (!quiet)
        printf("Image resized.\n");
    rc = IMG_EXIT_OK;
out:
    block_close(bs);
    return rc;
}
