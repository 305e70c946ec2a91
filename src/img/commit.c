/* wisp-img commit: writes the data of an image (and of the images between it and the base)
 * into its base image, then empties the image unless -d. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "img/img.h"

#define COMMIT_CHUNK (1u << 20)

static const char commit_help[] =
    "Commits the changes recorded in 'filename' into its backing file.\n"
    "\n"
    "  -b base     commit into this image of the chain (default: the direct backing file);\n"
    "              the images between filename and base are committed too\n"
    "  -d          do not empty 'filename' afterwards\n"
    "  -f fmt      format of 'filename'\n"
    "  -t cache    cache mode for writing the base (default writeback)\n"
    "  -p          progress bar on stderr\n"
    "  -q          quiet\n";

static struct block_dev *find_base(struct block_dev *top, const char *name)
{
    char want[PATH_MAX], have[PATH_MAX];
    if (!name)
        return top->backing;
    for (struct block_dev *b = top->backing; b; b = b->backing) {
        if (!strcmp(b->filename, name))
            return b;
        if (realpath(name, want) && realpath(b->filename, have) && !strcmp(want, have))
            return b;
    }
    return NULL;
}

/* Copies every run allocated above `base` into `out` (base opened read-write). */
static int commit_copy(struct block_dev *top, struct block_dev *base, struct block_dev *out,
                       struct img_progress *pg, struct wisp_err *err)
{
    cleanup_free uint8_t *buf = malloc(COMMIT_CHUNK);
    if (!buf)
        return wisp_err_set(err, ENOMEM, "out of memory");
    uint64_t size = top->size < out->size ? top->size : out->size;
    for (uint64_t p = 0; p < size;) {
        uint64_t len = size - p < COMMIT_CHUNK ? size - p : COMMIT_CHUNK, pnum, host;
        int depth;
        struct block_dev *layer;
        int st = img_status_above(top, base, p, len, &pnum, &host, &depth, &layer, err);
        if (st < 0)
            return st;
        int r = 0;
        if (st & BLOCK_STATUS_ALLOCATED) {
            if (st & BLOCK_STATUS_ZERO)
                r = block_write_zeroes(out, p, pnum, 0, err);
            else if ((r = block_pread(top, p, buf, pnum, err)) == 0)
                r = block_pwrite(out, p, buf, pnum, err);
        }
        if (r < 0)
            return r;
        p += pnum;
        img_progress_update(pg, p, size);
    }
    return block_flush(out, err);
}

static int commit_empty(struct block_dev **top, struct wisp_err *err)
{
    struct block_info in;
    if ((*top)->drv != &qcow2_driver)
        return IMG_EXIT_OK;
    int r = block_get_info(*top, &in, err);
    if (r < 0)
        return IMG_EXIT_ERROR;
    if (in.nr_snapshots)
        return IMG_EXIT_OK; /* the snapshots still reference the clusters: keep them */
    struct qcow2_create_opts q = {
        .size = (*top)->size,
        .cluster_size = in.cluster_size,
        .version = in.qcow2_version,
        .refcount_bits = in.refcount_bits,
        .lazy_refcounts = in.lazy_refcounts,
        .extended_l2 = in.extended_l2,
        .backing_file = in.backing_file,
        .backing_format = in.backing_format[0] ? in.backing_format : NULL,
    };
    /* The empty image is made beside the old one and renamed over it: a failure leaves the
     * image as it was (its data, now also in the base, still shows). */
    cleanup_free char *path = strdup((*top)->filename);
    cleanup_free char *tmp = malloc(strlen((*top)->filename) + 32);
    if (!path || !tmp)
        return wisp_err_set(err, ENOMEM, "out of memory"), IMG_EXIT_ERROR;
    sprintf(tmp, "%s.commit-%d", path, (int)getpid());
    if ((r = qcow2_create(tmp, &q, err)) < 0)
        return IMG_EXIT_ERROR;
    block_close(*top);
    *top = NULL;
    if (rename(tmp, path) < 0) {
        wisp_err_sys(err, errno, "renaming %s to %s", tmp, path);
        unlink(tmp);
        return IMG_EXIT_ERROR;
    }
    return IMG_EXIT_OK;
}

int img_commit_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {0}};
    const char *fmt = NULL, *base_name = NULL, *cache = NULL;
    bool keep = false, quiet = false;
    struct img_progress pg = {.last = -1};
    int c;
    while ((c = getopt_long(argc, argv, "hf:b:dt:pqr:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h':
            return img_print_command_help("commit", commit_help);
        case 'f':
            fmt = optarg;
            break;
        case 'b':
            base_name = optarg;
            break;
        case 'd':
            keep = true;
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
        case 'r':
            break;
        default:
            return img_usage_error("commit", "invalid option");
        }
    }
    if (optind != argc - 1)
        return img_usage_error("commit", "Expecting one image file name");
    pg.enabled &= !quiet;
    struct block_dev *top, *out = NULL;
    struct img_open_args a = {.format = fmt, .read_only = keep, .cache = cache, .preflight = true};
    if (img_open(&top, argv[optind], &a) < 0)
        return IMG_EXIT_ERROR;
    int rc = IMG_EXIT_ERROR;
    struct block_dev *base = find_base(top, base_name);
    if (!base) {
        img_error(base_name ? "'%s' is not in the backing chain of '%s'"
                            : "%s'%s' has no backing file",
                  base_name ? base_name : "", argv[optind]);
        goto out;
    }
    struct img_open_args ba = {
        .format = base->drv->name, .no_backing = true, .cache = cache, .preflight = true};
    if (img_open(&out, base->filename, &ba) < 0)
        goto out;
    struct wisp_err err = {0};
    if (commit_copy(top, base, out, &pg, &err) < 0) {
        img_error("committing '%s' into '%s': %s", argv[optind], base->filename, err.msg);
        goto out;
    }
    /* The data now lives in the base: empty the image (as qemu-img does) when it has a direct
     * backing file. A qcow2 discard with a backing file leaves zero clusters that would hide
     * the base, so the image is recreated empty with the same header options instead. */
    if (!keep && top->backing == base && (rc = commit_empty(&top, &err)) != IMG_EXIT_OK) {
        img_error("emptying '%s': %s", argv[optind], err.msg);
        goto out;
    }
    img_progress_end(&pg);
    if (!quiet)
        printf("Image committed.\n");
    rc = IMG_EXIT_OK;
out:
    block_close(out);
    block_close(top);
    return rc;
}
