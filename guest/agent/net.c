/* wisp-agent's network setup: interfaces (MTU, addresses, up), routes (rtnetlink, RFC 3549)
 * and the guest's /etc/resolv.conf. */
#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "agent.h"
#include "common/cleanup.h"

struct nl_req {
    struct nlmsghdr h;
    union {
        struct ifaddrmsg ifa;
        struct rtmsg rt;
    };
    char attrs[256];
};

static void nl_attr(struct nl_req *r, unsigned short type, const void *data, size_t len)
{
    struct rtattr *a = (struct rtattr *)((char *)r + NLMSG_ALIGN(r->h.nlmsg_len));

    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(a), data, len);
    r->h.nlmsg_len = NLMSG_ALIGN(r->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Sends one request and reads its acknowledgement: 0 or -errno (EEXIST counts as done). */
static int nl_talk(struct nl_req *r)
{
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    cleanup_close int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    char buf[4096];
    ssize_t n;

    if (fd < 0)
        return -errno;
    r->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    if (sendto(fd, r, r->h.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -errno;
    n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0)
        return -errno;
    for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
         h = NLMSG_NEXT(h, n)) {
        if (h->nlmsg_type == NLMSG_ERROR) {
            int e = ((struct nlmsgerr *)NLMSG_DATA(h))->error;

            return e == -EEXIST ? 0 : e;
        }
    }
    return 0;
}

static int add_address(unsigned ifindex, const char *cidr, struct wisp_err *err)
{
    struct nl_req r = {0};
    uint8_t addr[16];
    unsigned prefix;
    int family, e;

    if (wa_cidr_parse(cidr, &family, addr, &prefix) < 0)
        return wisp_err_set(err, EINVAL, "'%s' is not ADDRESS/PREFIX", cidr);
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof(r.ifa));
    r.h.nlmsg_type = RTM_NEWADDR;
    r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    r.ifa = (struct ifaddrmsg){.ifa_family = (unsigned char)family,
                               .ifa_prefixlen = (unsigned char)prefix,
                               .ifa_index = ifindex};
    nl_attr(&r, IFA_LOCAL, addr, family == AF_INET ? 4 : 16);
    nl_attr(&r, IFA_ADDRESS, addr, family == AF_INET ? 4 : 16);
    if ((e = nl_talk(&r)) < 0)
        return wisp_err_sys(err, -e, "address %s", cidr);
    return 0;
}

static int add_route(const struct wisp_agent_route *rt, struct wisp_err *err)
{
    struct nl_req r = {0};
    uint8_t dst[16], gw[16];
    unsigned prefix, oif = 0;
    int family, e;

    if (wa_cidr_parse(rt->destination, &family, dst, &prefix) < 0)
        return wisp_err_set(err, EINVAL, "route: '%s' is not ADDRESS/PREFIX", rt->destination);
    if (rt->device && !(oif = if_nametoindex(rt->device)))
        return wisp_err_set(err, ENODEV, "route %s: no interface '%s'", rt->destination,
                            rt->device);
    r.h.nlmsg_len = NLMSG_LENGTH(sizeof(r.rt));
    r.h.nlmsg_type = RTM_NEWROUTE;
    r.h.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    r.rt = (struct rtmsg){.rtm_family = (unsigned char)family,
                          .rtm_dst_len = (unsigned char)prefix,
                          .rtm_table = RT_TABLE_MAIN,
                          .rtm_protocol = RTPROT_BOOT,
                          .rtm_scope = rt->gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK,
                          .rtm_type = RTN_UNICAST};
    if (prefix)
        nl_attr(&r, RTA_DST, dst, family == AF_INET ? 4 : 16);
    if (rt->gateway) {
        inet_pton(family, rt->gateway, gw);
        nl_attr(&r, RTA_GATEWAY, gw, family == AF_INET ? 4 : 16);
    }
    if (oif)
        nl_attr(&r, RTA_OIF, &oif, sizeof(oif));
    if ((e = nl_talk(&r)) < 0)
        return wisp_err_sys(err, -e, "route %s", rt->destination);
    return 0;
}

static int set_iface(const struct wisp_agent_iface *f, struct wisp_err *err)
{
    cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = {0};
    unsigned idx = if_nametoindex(f->name);
    int r;

    if (!idx)
        return wisp_err_set(err, ENODEV, "no interface '%s'", f->name);
    if (s < 0)
        return wisp_err_sys(err, errno, "socket");
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", f->name);
    if (f->mtu) {
        ifr.ifr_mtu = (int)f->mtu;
        if (ioctl(s, SIOCSIFMTU, &ifr) < 0)
            return wisp_err_sys(err, errno, "%s: MTU %u", f->name, f->mtu);
    }
    for (size_t i = 0; i < f->naddresses; i++)
        if ((r = add_address(idx, f->addresses[i], err)) < 0)
            return wisp_err_wrap(err, "%s", f->name);
    if (f->up) {
        if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
            return wisp_err_sys(err, errno, "%s: flags", f->name);
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            return wisp_err_sys(err, errno, "%s: up", f->name);
    }
    return 0;
}

int net_apply(const struct wisp_agent_network *n, struct wisp_err *err)
{
    int r;

    for (size_t i = 0; i < n->nifaces; i++)
        if ((r = set_iface(&n->ifaces[i], err)) < 0)
            return r;
    for (size_t i = 0; i < n->nroutes; i++)
        if ((r = add_route(&n->routes[i], err)) < 0)
            return r;
    if (n->resolv_conf) {
        cleanup_close int fd = -1;
        size_t len = strlen(n->resolv_conf);

        mkdir("/etc", 0755);
        fd = open("/etc/resolv.conf", O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, n->resolv_conf, len) != (ssize_t)len)
            return wisp_err_sys(err, errno, "/etc/resolv.conf");
    }
    return 0;
}
