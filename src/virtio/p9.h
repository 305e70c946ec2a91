/* virtio-9p (virtio 1.2 §5.?; the 9p transport of Linux's net/9p/trans_virtio.c) and the
 * 9P2000.L file server behind it (docs/9p.md): a host directory shared with the guest, every
 * path the guest names kept inside it. */
#ifndef WISP_VIRTIO_P9_H
#define WISP_VIRTIO_P9_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "devices/device.h"

#define P9_TAG_MAX    31        /* mount tag bytes (Linux before 5.x took at most 31) */
#define P9_MAX_MSIZE  (1 << 20) /* the largest message size offered */
#define P9_MIN_MSIZE  4096      /* Tversion below this is refused */
#define P9_MAX_FIDS   65536     /* fids one session may hold (each holds a host fd) */
#define P9_MAX_WALK   16        /* names in one Twalk (MAXWELEM) */
#define P9_XATTR_MAX  65536     /* an extended attribute's value (XATTR_SIZE_MAX) */
#define P9_HEADER_LEN 7         /* size[4] type[1] tag[2] */

/* The device's parameters (--fs tag=NAME,path=DIR[,ro], PUT /fs/{id}). */
struct virtio_9p_params {
    const char *id;   /* the device's name (NULL: fsN) */
    const char *tag;  /* the mount tag the guest names (1..P9_TAG_MAX of [A-Za-z0-9_.-]) */
    const char *path; /* the shared host directory */
    bool read_only;   /* every change is refused with EROFS */
};
extern const struct device_ops virtio_9p_device_ops;

/* Checks a tag as --fs and PUT /fs do: -EINVAL with err naming `where`. */
int p9_check_tag(const char *tag, const char *where, struct wisp_err *err);

/*
 * The file server: one 9P2000.L session over one shared directory. Not thread-safe: one
 * thread (the device's) handles its requests one at a time.
 *   p9_server_create  opens `path` (a directory; O_PATH) and /proc/self/fd (reopening a fid's
 *                     file by its fd, as virtiofsd does): call before privileges are dropped
 *                     and seccomp is loaded
 *   p9_server_handle  one request of req_len bytes (the guest's, untrusted: every field is
 *                     checked) -> its reply in out (cap bytes, at least P9_HEADER_LEN + 4);
 *                     returns the reply's length. A request that cannot be parsed gets an
 *                     Rlerror (EINVAL, or EPROTO for an unknown type) with its tag.
 *   p9_server_read_direct  the same for a Tread, into the guest's buffers without a copy
 *   p9_server_reset   forgets the session (every fid closed), as a device reset does
 *   p9_server_msize   the negotiated message size (P9_MAX_MSIZE before Tversion)
 */
struct p9_server;
int p9_server_create(struct p9_server **out, const char *path, bool read_only,
                     struct wisp_err *err);
size_t p9_server_handle(struct p9_server *s, const uint8_t *req, size_t req_len, uint8_t *out,
                        size_t cap);
/* A Tread of an open file answered straight into in[] (the writable buffers of a chain, cap
 * bytes in all): the data after the reply's header, then the header. 0 when the request is
 * something else or fails: then call p9_server_handle() for it. */
struct iovec;
size_t p9_server_read_direct(struct p9_server *s, const uint8_t *req, size_t req_len,
                             const struct iovec *in, unsigned nr_in, size_t cap);
void p9_server_reset(struct p9_server *s);
uint32_t p9_server_msize(const struct p9_server *s);
unsigned p9_server_nr_fids(const struct p9_server *s);
void p9_server_destroy(struct p9_server *s);

#endif
