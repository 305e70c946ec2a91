/* Bridges, taps, addresses and the host's routes through rtnetlink and /dev/net/tun
 * (netlink.h). */
#include "netlink.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/cleanup.h"

#define NL_BUF 32768

struct nl_req {
    struct nlmsghdr h;
    union {
        struct ifinfomsg ifi;
        struct ifaddrmsg ifa;
        struct rtmsg rtm;
    };
    char attrs[256];
};

static struct rtattr *add_attr(struct nl_req *r, unsigned short type, const void *data, size_t len)
{
    struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));
    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len)
        memcpy(RTA_DATA(a), data, len);
    r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
    return a;
}

static int nl_socket(struct wisp_err *err)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return wisp_err_sys(err, errno, "netlink socket");
    int one = 1;
    struct timeval tv = {.tv_sec = 2}; /* the kernel answers at once; this bounds a bug */
    setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* The error of an NLMSG_ERROR answer, with the kernel's extended message when it gave one. */
static int ack_error(const struct nlmsghdr *h, const char *what, struct wisp_err *err)
{
    const struct nlmsgerr *e = NLMSG_DATA(h);
    if (e->error == 0)
        return 0;
    const char *msg = NULL;
    if (h->nlmsg_flags & NLM_F_ACK_TLVS) {
        size_t off =
            sizeof(*e) + ((h->nlmsg_flags & NLM_F_CAPPED) ? 0 : e->msg.nlmsg_len - NLMSG_HDRLEN);
        const struct rtattr *a = (const struct rtattr *)((const char *)e + NLMSG_ALIGN(off));
        int len = (int)h->nlmsg_len - (int)NLMSG_HDRLEN - (int)NLMSG_ALIGN(off);
        for (; RTA_OK(a, len); a = RTA_NEXT(a, len))
            if (a->rta_type == NLMSGERR_ATTR_MSG)
                msg = RTA_DATA(a);
    }
    if (msg)
        return wisp_err_set(err, -e->error, "%s: %s (%s)", what, strerror(-e->error), msg);
    return wisp_err_sys(err, -e->error, "%s", what);
}

/* Sends one request and reads its acknowledgement. */
static int transact(struct nl_req *r, const char *what, struct wisp_err *err)
{
    cleanup_close int fd = nl_socket(err);
    if (fd < 0)
        return fd;
    r->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    r->h.nlmsg_seq = 1;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, r, r->h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return wisp_err_sys(err, errno, "%s: netlink send", what);
    char buf[8192];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0)
            return wisp_err_sys(err, errno, "%s: netlink receive", what);
        int len = (int)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len); h = NLMSG_NEXT(h, len))
            if (h->nlmsg_type == NLMSG_ERROR)
                return ack_error(h, what, err);
    }
}

static void init_link(struct nl_req *r, unsigned short type, unsigned short flags)
{
    memset(r, 0, sizeof(*r));
    r->h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
    r->h.nlmsg_type = type;
    r->h.nlmsg_flags = flags;
    r->ifi.ifi_family = AF_UNSPEC;
}

int nl_bridge_add(const char *name, uint64_t mac, struct wisp_err *err)
{
    struct nl_req r;
    char what[64];
    unsigned char addr[6];
    for (int i = 0; i < 6; i++)
        addr[i] = (unsigned char)(mac >> (40 - 8 * i));
    snprintf(what, sizeof(what), "bridge '%s'", name);
    init_link(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
    add_attr(&r, IFLA_IFNAME, name, strlen(name) + 1);
    add_attr(&r, IFLA_ADDRESS, addr, sizeof(addr));
    struct rtattr *info = add_attr(&r, IFLA_LINKINFO, NULL, 0);
    add_attr(&r, IFLA_INFO_KIND, "bridge", 7);
    info->rta_len = (unsigned short)((char *)&r + r.h.nlmsg_len - (char *)info);
    return transact(&r, what, err);
}

unsigned nl_link_index(const char *name)
{
    return if_nametoindex(name);
}

int nl_link_del(const char *name, struct wisp_err *err)
{
    struct nl_req r;
    char what[64];
    snprintf(what, sizeof(what), "deleting '%s'", name);
    init_link(&r, RTM_DELLINK, 0);
    add_attr(&r, IFLA_IFNAME, name, strlen(name) + 1);
    int ret = transact(&r, what, err);
    return ret == -ENODEV ? 0 : ret;
}

int nl_link_up(const char *name, const char *master, struct wisp_err *err)
{
    struct nl_req r;
    char what[64];
    snprintf(what, sizeof(what), "'%s'%s%s: up", name, master ? " on " : "", master ? master : "");
    unsigned idx = nl_link_index(name), midx = master ? nl_link_index(master) : 0;
    if (!idx || (master && !midx))
        return wisp_err_set(err, ENODEV, "%s: no interface '%s'", what, idx ? master : name);
    init_link(&r, RTM_NEWLINK, 0);
    r.ifi.ifi_index = (int)idx;
    r.ifi.ifi_flags = IFF_UP;
    r.ifi.ifi_change = IFF_UP;
    if (master)
        add_attr(&r, IFLA_MASTER, &midx, sizeof(midx));
    return transact(&r, what, err);
}

int nl_addr_add(const char *name, uint32_t addr, unsigned prefix, struct wisp_err *err)
{
    struct nl_req r;
    char what[80], a[INET_ADDRSTRLEN];
    uint32_t be = htonl(addr), bcast = htonl(addr | ~(prefix ? ~0u << (32 - prefix) : 0));
    inet_ntop(AF_INET, &be, a, sizeof(a));
    snprintf(what, sizeof(what), "'%s': address %s/%u", name, a, prefix);
    unsigned idx = nl_link_index(name);
    if (!idx)
        return wisp_err_set(err, ENODEV, "%s: no interface '%s'", what, name);
    memset(&r, 0, sizeof(r));
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg));
    r.h.nlmsg_type = RTM_NEWADDR;
    r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE;
    r.ifa.ifa_family = AF_INET;
    r.ifa.ifa_prefixlen = (unsigned char)prefix;
    r.ifa.ifa_index = idx;
    add_attr(&r, IFA_LOCAL, &be, 4);
    add_attr(&r, IFA_ADDRESS, &be, 4);
    add_attr(&r, IFA_BROADCAST, &bcast, 4);
    return transact(&r, what, err);
}

int nl_tap_add(const char *name, long long uid, long long gid, struct wisp_err *err)
{
    if (nl_link_index(name))
        return wisp_err_set(err, EEXIST, "tap '%s': an interface of that name exists", name);
    cleanup_close int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return wisp_err_sys(err, errno, "tap '%s': /dev/net/tun", name);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        return wisp_err_sys(err, errno, "tap '%s': TUNSETIFF", name);
    if (uid >= 0 && ioctl(fd, TUNSETOWNER, (unsigned long)uid) < 0)
        return wisp_err_sys(err, errno, "tap '%s': TUNSETOWNER %lld", name, uid);
    if (gid >= 0 && ioctl(fd, TUNSETGROUP, (unsigned long)gid) < 0)
        return wisp_err_sys(err, errno, "tap '%s': TUNSETGROUP %lld", name, gid);
    if (ioctl(fd, TUNSETPERSIST, 1) < 0)
        return wisp_err_sys(err, errno, "tap '%s': TUNSETPERSIST", name);
    return 0;
}

/* One dump (RTM_GETROUTE or RTM_GETADDR, AF_INET), each answer to fn. */
static int dump(unsigned short type, int (*fn)(const struct nl_prefix *p, void *opaque),
                void *opaque, struct wisp_err *err)
{
    cleanup_close int fd = nl_socket(err);
    if (fd < 0)
        return fd;
    struct nl_req r;
    memset(&r, 0, sizeof(r));
    r.h.nlmsg_len =
        NLMSG_LENGTH(type == RTM_GETROUTE ? sizeof(struct rtmsg) : sizeof(struct ifaddrmsg));
    r.h.nlmsg_type = type;
    r.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    r.h.nlmsg_seq = 1;
    if (type == RTM_GETROUTE)
        r.rtm.rtm_family = AF_INET;
    else
        r.ifa.ifa_family = AF_INET;
    const char *what = type == RTM_GETROUTE ? "the host's routes" : "the host's addresses";
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(fd, &r, r.h.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return wisp_err_sys(err, errno, "%s: netlink send", what);
    cleanup_free char *buf = malloc(NL_BUF);
    if (!buf)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", what);
    for (;;) {
        ssize_t n = recv(fd, buf, NL_BUF, 0);
        if (n < 0)
            return wisp_err_sys(err, errno, "%s: netlink receive", what);
        int len = (int)n;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, len);
             h = NLMSG_NEXT(h, len)) {
            if (h->nlmsg_type == NLMSG_DONE)
                return 0;
            if (h->nlmsg_type == NLMSG_ERROR)
                return ack_error(h, what, err) ?: -EIO;
            if (h->nlmsg_type != RTM_NEWROUTE && h->nlmsg_type != RTM_NEWADDR)
                continue;
            struct nl_prefix p = {.kind = type == RTM_GETROUTE ? "route" : "address"};
            unsigned ifindex = 0;
            const struct rtattr *a;
            int alen;
            if (type == RTM_GETROUTE) {
                const struct rtmsg *rt = NLMSG_DATA(h);
                p.prefix = rt->rtm_dst_len;
                p.table = rt->rtm_table;
                a = RTM_RTA(rt);
                alen = (int)RTM_PAYLOAD(h);
            } else {
                const struct ifaddrmsg *ifa = NLMSG_DATA(h);
                p.prefix = ifa->ifa_prefixlen;
                ifindex = ifa->ifa_index;
                a = IFA_RTA(ifa);
                alen = (int)IFA_PAYLOAD(h);
            }
            for (; RTA_OK(a, alen); a = RTA_NEXT(a, alen)) {
                uint32_t v = 0;
                if (RTA_PAYLOAD(a) >= 4)
                    memcpy(&v, RTA_DATA(a), 4);
                if ((type == RTM_GETROUTE && a->rta_type == RTA_DST) ||
                    (type == RTM_GETADDR && a->rta_type == IFA_LOCAL))
                    p.addr = ntohl(v);
                else if (type == RTM_GETROUTE && a->rta_type == RTA_OIF)
                    ifindex = v;
                else if (type == RTM_GETROUTE && a->rta_type == RTA_TABLE)
                    p.table = v;
            }
            if (!ifindex || !if_indextoname(ifindex, p.dev))
                p.dev[0] = '\0';
            int ret = fn(&p, opaque);
            if (ret)
                return ret;
        }
    }
}

int nl_for_each_prefix(int (*fn)(const struct nl_prefix *p, void *opaque), void *opaque,
                       struct wisp_err *err)
{
    int ret = dump(RTM_GETROUTE, fn, opaque, err);
    return ret ? ret : dump(RTM_GETADDR, fn, opaque, err);
}
