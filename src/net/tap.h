/* The host side of a NIC: a Linux tap device (/dev/net/tun, IFF_TAP) with virtio-net headers
 * in front of every frame (IFF_VNET_HDR), opened non-blocking. */
#ifndef WISP_NET_TAP_H
#define WISP_NET_TAP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "common/err.h"

#define TAP_NAME_MAX 16 /* IFNAMSIZ, with the terminating NUL */

/*
 * One open tap. The fd belongs to the thread that serves the NIC (its I/O thread) once the
 * device runs; tap_open and tap_close run on the thread that creates and destroys the machine.
 * Every read returns one frame and every write sends one frame; neither ever blocks (O_NONBLOCK):
 * an empty tap reads -EAGAIN, a tap whose send buffer is full writes -EAGAIN (wait for EPOLLOUT).
 */
struct tap {
    int fd;
    char name[TAP_NAME_MAX];
    bool created;      /* the tap did not exist: it goes away when the fd is closed */
    unsigned offloads; /* TUN_F_* flags TUNSETOFFLOAD accepted when probed at open */
};

/*
 * Opens the tap `name` (an existing one, or a new one when the process may create it:
 * CAP_NET_ADMIN) with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, sets the vnet header size to
 * `vnet_hdr_len` (12 for virtio 1.x, struct virtio_net_hdr_v1) and little-endian headers,
 * probes which offloads (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_UFO) it accepts and leaves
 * them all off. Returns 0, or -errno with err naming the tap and the reason: it does not exist
 * and may not be created, it is in use, it is not a tap. Pair with tap_close().
 */
int tap_open(struct tap *t, const char *name, int vnet_hdr_len, struct wisp_err *err);
/* Before a VM is built: can tap_open() get `name`? It can when the tap exists (an open may
 * still find it in use or not ours) or when this process may create it (CAP_NET_ADMIN). Returns
 * 0, or -EPERM with err saying why (the same words as tap_open's). */
int tap_check(const char *name, struct wisp_err *err);
/* Closes the fd (a tap wisp created then disappears); safe on a closed or failed tap. */
void tap_close(struct tap *t);

/* The offloads (TUN_F_* flags) the reader of this fd takes: frames the kernel hands to
 * tap_read may then carry partial checksums (TUN_F_CSUM) or be GSO frames (TSO4/6, UFO). */
int tap_set_offload(struct tap *t, unsigned tun_flags, struct wisp_err *err);

/* One frame (vnet header first) into buf; returns its length, or -errno (-EAGAIN: none).
 * A frame longer than len is cut to len: pass a buffer longer than the largest frame. */
ssize_t tap_read(struct tap *t, void *buf, size_t len);
/* One frame (vnet header first) from iov; returns the length written or -errno (-EAGAIN: the
 * tap's queue is full; -EIO: the interface is down; -EINVAL: the kernel refused the header). */
ssize_t tap_writev(struct tap *t, const struct iovec *iov, int iovcnt);

#endif
