/* The raw format: guest offset == host offset. Holes of a sparse file read as zeroes and are
 * reported as such by block_status (SEEK_DATA/SEEK_HOLE). */
#include "block/block_int.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

static int raw_probe(const uint8_t *buf, size_t len)
{
    return 1; /* anything can be raw; every other format scores higher */
}

static int raw_open(struct block_dev *bs, const struct block_open_opts *opts, struct wisp_err *err)
{
    return block_file_size(bs->file, &bs->size, err);
}

static void raw_close(struct block_dev *bs)
{
}

static int raw_preadv(struct block_dev *bs, uint64_t offset, const struct iovec *iov, int iovcnt,
                      struct wisp_err *err)
{
    return block_file_preadv(bs->file, offset, iov, iovcnt, err);
}

static int raw_pwritev(struct block_dev *bs, uint64_t offset, const struct iovec *iov, int iovcnt,
                       struct wisp_err *err)
{
    return block_file_pwritev(bs->file, offset, iov, iovcnt, err);
}

static int raw_flush(struct block_dev *bs, struct wisp_err *err)
{
    return block_file_flush(bs->file, err);
}

static int raw_discard(struct block_dev *bs, uint64_t offset, uint64_t len, struct wisp_err *err)
{
    int r = block_file_discard(bs->file, offset, len, err);
    return r == -EOPNOTSUPP ? 0 : r; /* discard is advisory */
}

static int raw_write_zeroes(struct block_dev *bs, uint64_t offset, uint64_t len, int flags,
                            struct wisp_err *err)
{
    return block_file_write_zeroes(bs->file, offset, len, flags & BLOCK_WZ_MAY_UNMAP, err);
}

static int raw_get_info(struct block_dev *bs, struct block_info *info, struct wisp_err *err)
{
    memset(info, 0, sizeof(*info));
    info->format = "raw";
    info->virtual_size = bs->size;
    int r = block_file_size(bs->file, &info->file_size, err);
    return r < 0 ? r : block_file_allocated(bs->file, &info->allocated, err);
}

/* Like QEMU's file driver: everything is "allocated" in the raw node; holes read as zeroes. */
static int raw_block_status(struct block_dev *bs, uint64_t offset, uint64_t len, uint64_t *pnum,
                            uint64_t *host_offset, struct wisp_err *err)
{
    bool data;
    int r = block_file_status(bs->file, offset, len, &data, pnum, err);
    if (r < 0)
        return r;
    *host_offset = offset;
    return (data ? BLOCK_STATUS_DATA : BLOCK_STATUS_ZERO) | BLOCK_STATUS_ALLOCATED |
           BLOCK_STATUS_OFFSET;
}

static int raw_truncate(struct block_dev *bs, uint64_t size, bool shrink_ok, struct wisp_err *err)
{
    if (size < bs->size && !shrink_ok)
        return wisp_err_set(err, EINVAL,
                            "%s: shrinking from %" PRIu64 " to %" PRIu64
                            " bytes would lose data (use --shrink)",
                            bs->filename, bs->size, size);
    int r = block_file_truncate(bs->file, size, err);
    if (r == 0)
        bs->size = size;
    return r;
}

const struct block_driver raw_driver = {
    .name = "raw",
    .probe = raw_probe,
    .open = raw_open,
    .close = raw_close,
    .preadv = raw_preadv,
    .pwritev = raw_pwritev,
    .flush = raw_flush,
    .discard = raw_discard,
    .write_zeroes = raw_write_zeroes,
    .get_info = raw_get_info,
    .block_status = raw_block_status,
    .truncate = raw_truncate,
};
