/* wisp-img rebase: changes an image's backing file. Safe mode (default) copies into the image
 * every unallocated range where the old and the new backing data differ, so the guest-visible
 * content stays the same; -u only rewrites the header. -b "" flattens (no backing file). */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "img/img.h"

#define REBASE_CHUNK (1u << 20)

static const char rebase_help[] =
    "Changes the backing file of 'filename' to 'backing_file'.\n"
    "\n"
    "  -b backing_file  the new backing file (relative names are relative to filename's\n"
    "                   directory); \"\" removes the backing file (the data is copied in)\n"
    "  -F backing_fmt   format of the new backing file (probed when omitted)\n"
    "  -u               unsafe: only rewrite the header, do not compare or copy data\n"
    "  -f fmt           format of 'filename' (qcow2)\n"
    "  -t cache         cache mode for 'filename'\n"
    "  -p               progress bar on stderr\n"
    "  -q               quiet\n";

/* Reads [off, off+len) of a backing node, zeroes past its end (or without a node). */
static int read_backing(struct block_dev *b, uint64_t off, uint8_t *buf, uint64_t len,
                        struct wisp_err *err)
{
    memset(buf, 0, len);
    if (!b || off >= b->size)
        return 0;
    uint64_t n = b->size - off < len ? b->size - off : len;
    return block_pread(b, off, buf, n, err);
}

static int rebase_copy(struct block_dev *bs, struct block_dev *new_backing, struct img_progress *pg,
                       struct wisp_err *err)
{
    cleanup_free uint8_t *a = malloc(REBASE_CHUNK);
    cleanup_free uint8_t *b = malloc(REBASE_CHUNK);
    if (!a || !b)
        return wisp_err_set(err, ENOMEM, "out of memory");
    for (uint64_t p = 0; p < bs->size;) {
        uint64_t len = bs->size - p < REBASE_CHUNK ? bs->size - p : REBASE_CHUNK, pnum, host;
        int st = block_status(bs, p, len, &pnum, &host, err);
        if (st < 0)
            return st;
        if (!(st & BLOCK_STATUS_ALLOCATED)) {
            int r = read_backing(bs->backing, p, a, pnum, err)
                        ?: read_backing(new_backing, p, b, pnum, err);
            if (r < 0)
                return r;
            /* copy only the 64 KiB pieces that differ, to keep the image small */
            for (uint64_t q = 0; q < pnum; q += 65536) {
                uint64_t n = pnum - q < 65536 ? pnum - q : 65536;
                if (memcmp(a + q, b + q, n) && (r = block_pwrite(bs, p + q, a + q, n, err)) < 0)
                    return r;
            }
        }
        p += pnum;
        img_progress_update(pg, p, bs->size);
    }
    return block_flush(bs, err);
}

static int set_backing(struct block_dev *bs, const char *name, const char *fmt,
                       struct wisp_err *err)
{
    if (bs->drv == &qcow2_driver)
        return qcow2_set_backing(bs, name && name[0] ? name : NULL, name && name[0] ? fmt : NULL,
                                 err);
    return wisp_err_set(err, ENOTSUP, "%s: format '%s' has no backing file", bs->filename,
                        bs->drv->name);
}

int img_rebase_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {0}};
    const char *fmt = NULL, *backing = NULL, *bfmt = NULL, *cache = NULL;
    bool unsafe = false, quiet = false;
    struct img_progress pg = {.last = -1};
    int c;
    while ((c = getopt_long(argc, argv, "hf:b:F:ut:T:pqU", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("rebase", rebase_help);
        case 'f':
            fmt = optarg;
            break;
        case 'b':
            backing = optarg;
            break;
        case 'F':
            bfmt = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'p':
            pg.enabled = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'T':
        case 'U':
            break;
        default:
            return img_usage_error("rebase", "invalid option");
        }
    }
    if (optind != argc - 1)
        return img_usage_error("rebase", "Expecting one image file name");
    if (!backing)
        return img_usage_error("rebase", "Must specify backing file (-b) or use unsafe mode (-u)");
    pg.enabled &= !quiet;
    struct block_dev *bs, *nb = NULL;
    struct img_open_args a = {
        .format = fmt, .no_backing = unsafe, .cache = cache, .preflight = true};
    if (img_open(&bs, argv[optind], &a) < 0)
        return IMG_EXIT_ERROR;
    int rc = IMG_EXIT_ERROR;
    struct wisp_err err = {0};
    if (!unsafe && backing[0]) {
        char path[4096];
        const char *slash = strrchr(bs->filename, '/');
        if (backing[0] == '/')
            snprintf(path, sizeof(path), "%s", backing);
        else
            snprintf(path, sizeof(path), "%.*s%s", slash ? (int)(slash - bs->filename + 1) : 0,
                     bs->filename, backing);
        struct img_open_args na = {.format = bfmt, .read_only = true, .preflight = true};
        if (img_open(&nb, path, &na) < 0) {
            img_error("Could not open new backing file '%s'", path);
            goto out;
        }
        if (!bfmt)
            bfmt = nb->drv->name;
    }
    if (!unsafe && rebase_copy(bs, nb, &pg, &err) < 0) {
        img_error("rebasing '%s': %s", argv[optind], err.msg);
        goto out;
    }
    if (set_backing(bs, backing, bfmt, &err) < 0) {
        img_error("Could not change the backing file to '%s': %s", backing, err.msg);
        goto out;
    }
    img_progress_end(&pg);
    rc = IMG_EXIT_OK;
out:
    block_close(nb);
    block_close(bs);
    return rc;
}
