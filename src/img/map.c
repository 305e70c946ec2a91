/* wisp-img map: where each range of the virtual disk comes from (which image of the chain, at
 * which host offset), as qemu-img map prints it (human table or JSON with start, length, depth,
 * present, zero, data, offset). */
#include <getopt.h>
#include <string.h>

#include "img/img.h"

static const char map_help[] =
    "Dumps the metadata of 'filename' and its backing chain: for every range of the disk,\n"
    "the image that holds it and where.\n"
    "\n"
    "  -f fmt          image format (probed when omitted)\n"
    "  --output=json   one JSON object per range (also --json): start, length, depth,\n"
    "                  present, zero, data and, where known, offset\n"
    "  --start-offset=N, --max-length=N   limit the range\n";

struct map_entry {
    uint64_t start, length, offset;
    int depth;
    bool present, zero, data, has_offset;
    const char *file;
};

static bool entry_mergeable(const struct map_entry *a, const struct map_entry *b)
{
    return a->depth == b->depth && a->present == b->present && a->zero == b->zero &&
           a->data == b->data && a->has_offset == b->has_offset && a->file == b->file &&
           (!a->has_offset || a->offset + a->length == b->offset);
}

static void entry_print(const struct map_entry *e, bool json, bool first)
{
    if (json) {
        printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, "
               "\"present\": %s, \"zero\": %s, \"data\": %s",
               first ? "[" : ",\n", e->start, e->length, e->depth, e->present ? "true" : "false",
               e->zero ? "true" : "false", e->data ? "true" : "false");
        if (e->has_offset)
            printf(", \"offset\": %" PRIu64, e->offset);
        printf("}");
    } else if (e->data && e->has_offset) {
        printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start, e->length, e->offset,
               e->file);
    }
}

int img_map_main(int argc, char **argv)
{
    enum { OPT_OUTPUT = 256, OPT_JSON, OPT_START, OPT_MAXLEN };
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
                                             {"output", required_argument, NULL, OPT_OUTPUT},
                                             {"json", no_argument, NULL, OPT_JSON},
                                             {"start-offset", required_argument, NULL, OPT_START},
                                             {"max-length", required_argument, NULL, OPT_MAXLEN},
                                             {0}};
    const char *fmt = NULL;
    bool json = false;
    uint64_t start = 0, maxlen = UINT64_MAX;
    int c, r;
    while ((c = getopt_long(argc, argv, "hf:U", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("map", map_help);
        case 'f':
            fmt = optarg;
            break;
        case 'U':
            break;
        case OPT_OUTPUT:
            if ((r = img_parse_output("map", optarg, &json)) != 0)
                return r;
            break;
        case OPT_JSON:
            json = true;
            break;
        case OPT_START:
            if (img_parse_size(optarg, "start offset", &start) < 0)
                return IMG_EXIT_ERROR;
            break;
        case OPT_MAXLEN:
            if (img_parse_size(optarg, "max length", &maxlen) < 0)
                return IMG_EXIT_ERROR;
            break;
        default:
            return img_usage_error("map", "invalid option");
        }
    }
    if (optind != argc - 1)
        return img_usage_error("map", "Expecting one image file name");
    struct block_dev *bs;
    struct img_open_args a = {.format = fmt, .read_only = true};
    if (img_open(&bs, argv[optind], &a) < 0)
        return IMG_EXIT_ERROR;
    uint64_t end =
        maxlen < bs->size - (start < bs->size ? start : bs->size) ? start + maxlen : bs->size;
    if (!json)
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    struct map_entry cur = {0};
    bool have = false, first = true;
    int rc = IMG_EXIT_OK;
    for (uint64_t p = start; p < end;) {
        uint64_t pnum, host;
        int depth;
        struct block_dev *layer;
        struct wisp_err err = {0};
        int st = img_status_above(bs, NULL, p, end - p, &pnum, &host, &depth, &layer, &err);
        if (st < 0) {
            img_error("%s", err.msg);
            rc = IMG_EXIT_ERROR;
            break;
        }
        struct map_entry e = {.start = p,
                              .length = pnum,
                              .depth = depth,
                              .file = layer->filename,
                              .present = st & BLOCK_STATUS_ALLOCATED,
                              .zero = st & BLOCK_STATUS_ZERO,
                              .data = st & BLOCK_STATUS_DATA,
                              .has_offset = st & BLOCK_STATUS_OFFSET,
                              .offset = host};
        if (have && entry_mergeable(&cur, &e)) {
            cur.length += e.length;
        } else {
            if (have)
                entry_print(&cur, json, first), first = false;
            cur = e;
            have = true;
        }
        p += pnum;
    }
    if (have)
        entry_print(&cur, json, first);
    if (json)
        printf(first && !have ? "[]\n" : "]\n");
    block_close(bs);
    return rc;
}
