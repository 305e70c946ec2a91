/* Tap devices through /dev/net/tun (Linux Documentation/networking/tuntap.rst). */
#include "net/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TUN_PATH "/dev/net/tun"

_Static_assert(TAP_NAME_MAX == IFNAMSIZ, "a tap name is an interface name");

/* Why TUNSETIFF failed, in words a person can act on. */
static int attach_error(struct tap *t, bool existed, int e, struct wisp_err *err)
{
    if (!existed && (e == EPERM || e == EACCES))
        return wisp_err_sys(err, e,
                            "tap '%s' does not exist, and wisp-vmm may not create it (creating "
                            "a tap needs CAP_NET_ADMIN)",
                            t->name);
    if (e == EPERM || e == EACCES)
        return wisp_err_sys(err, e,
                            "tap '%s': wisp-vmm may not use it (it belongs to another user or "
                            "group, and wisp-vmm has no CAP_NET_ADMIN)",
                            t->name);
    if (e == EBUSY)
        return wisp_err_sys(err, e, "tap '%s' is in use (another process has it open)", t->name);
    if (e == EINVAL && existed)
        return wisp_err_sys(err, e,
                            "'%s' is not a tap device wisp-vmm can use (not a tap, or a "
                            "multi-queue one)",
                            t->name);
    return wisp_err_sys(err, e, "tap '%s': TUNSETIFF", t->name);
}

/* CAP_NET_ADMIN in the effective set (capget(2); no libcap needed for one bit). */
static bool may_create_taps(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &hdr, data) < 0)
        return false;
    return data[CAP_NET_ADMIN / 32].effective & (1u << (CAP_NET_ADMIN % 32));
}

int tap_check(const char *name, struct wisp_err *err)
{
    if (!name || !*name || strlen(name) >= TAP_NAME_MAX)
        return wisp_err_set(err, EINVAL, "tap '%s': a name of 1 to %d characters is needed",
                            name ? name : "", TAP_NAME_MAX - 1);
    if (if_nametoindex(name) != 0 || may_create_taps())
        return 0;
    return wisp_err_set(err, EPERM,
                        "tap '%s' does not exist, and wisp-vmm may not create it (creating "
                        "a tap needs CAP_NET_ADMIN)",
                        name);
}

static int attach(struct tap *t, struct wisp_err *err)
{
    bool existed = if_nametoindex(t->name) != 0;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    memcpy(ifr.ifr_name, t->name, IFNAMSIZ);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(t->fd, TUNSETIFF, &ifr) < 0)
        return attach_error(t, existed, errno, err);
    t->created = !existed;
    return 0;
}

/* Which offloads the tap takes, one at a time (TSO and UFO need TUN_F_CSUM with them). */
static unsigned probe_offloads(int fd)
{
    static const unsigned extra[] = {TUN_F_TSO4, TUN_F_TSO6, TUN_F_UFO};
    unsigned ok = 0;
    if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM) == 0) {
        ok = TUN_F_CSUM;
        for (size_t i = 0; i < sizeof(extra) / sizeof(extra[0]); i++)
            if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | extra[i]) == 0)
                ok |= extra[i];
    }
    (void)ioctl(fd, TUNSETOFFLOAD, 0);
    return ok;
}

int tap_open(struct tap *t, const char *name, int vnet_hdr_len, struct wisp_err *err)
{
    memset(t, 0, sizeof(*t));
    t->fd = -1;
    if (!name || !*name || strlen(name) >= sizeof(t->name))
        return wisp_err_set(err, EINVAL, "tap '%s': a name of 1 to %zu characters is needed",
                            name ? name : "", sizeof(t->name) - 1);
    strcpy(t->name, name);
    t->fd = open(TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (t->fd < 0)
        return wisp_err_sys(err, errno, "tap '%s': %s", t->name, TUN_PATH);
    unsigned features = 0;
    int r = 0;
    if (ioctl(t->fd, TUNGETFEATURES, &features) < 0 || !(features & IFF_VNET_HDR))
        r = wisp_err_set(err, ENOTSUP, "tap '%s': this kernel's tun driver has no IFF_VNET_HDR",
                         t->name);
    if (r == 0)
        r = attach(t, err);
    if (r == 0 && ioctl(t->fd, TUNSETVNETHDRSZ, &vnet_hdr_len) < 0)
        r = wisp_err_sys(err, errno, "tap '%s': TUNSETVNETHDRSZ %d", t->name, vnet_hdr_len);
    if (r == 0) {
        int le = 1; /* virtio 1.x headers are little-endian (a no-op on x86) */
        (void)ioctl(t->fd, TUNSETVNETLE, &le);
        t->offloads = probe_offloads(t->fd);
    }
    if (r < 0)
        tap_close(t);
    return r;
}

void tap_close(struct tap *t)
{
    if (t->fd >= 0)
        close(t->fd);
    t->fd = -1;
}

int tap_set_offload(struct tap *t, unsigned tun_flags, struct wisp_err *err)
{
    if (ioctl(t->fd, TUNSETOFFLOAD, tun_flags) < 0)
        return wisp_err_sys(err, errno, "tap '%s': TUNSETOFFLOAD 0x%x", t->name, tun_flags);
    return 0;
}

ssize_t tap_read(struct tap *t, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = read(t->fd, buf, len);
        if (n >= 0 || errno != EINTR)
            return n < 0 ? -errno : n;
    }
}

ssize_t tap_writev(struct tap *t, const struct iovec *iov, int iovcnt)
{
    for (;;) {
        ssize_t n = writev(t->fd, iov, iovcnt);
        if (n >= 0 || errno != EINTR)
            return n < 0 ? -errno : n;
    }
}
