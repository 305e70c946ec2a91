/* The message-level checks of the guest agent protocol: which fields each request and answer
 * needs, and the values they may take (docs/agent-protocol.md, "Messages"). */
#include "agent/proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int need(const struct wa_msg *m, enum wa_tag t, const char *what, struct wisp_err *err)
{
    if (!wa_has(m, t))
        return wisp_err_set(err, EPROTO, "no %s (field %d)", what, t);
    return 0;
}

static int check_ids(const struct wa_msg *m, bool exec, struct wisp_err *err)
{
    if (!m->container || !wa_id_valid(m->container, false))
        return wisp_err_set(err, EINVAL,
                            "a container id of 1-%d characters [A-Za-z0-9_.+-] "
                            "is needed",
                            WISP_AGENT_ID_MAX);
    if (exec && (!m->exec_id || !wa_id_valid(m->exec_id, true)))
        return wisp_err_set(err, EINVAL,
                            "an exec id of 0-%d characters [A-Za-z0-9_.+-] is "
                            "needed (\"\" for the container's own process)",
                            WISP_AGENT_ID_MAX);
    return 0;
}

static bool absolute(const char *p)
{
    return p && p[0] == '/';
}

/* "a.b.c.d/N" (or an IPv6 address /N): the family, the address and the prefix length. */
int wa_cidr_parse(const char *s, int *family, uint8_t addr[16], unsigned *prefix)
{
    char buf[64];
    const char *slash = s ? strchr(s, '/') : NULL;
    char *end;
    unsigned long n;
    size_t len;

    if (!slash || (len = (size_t)(slash - s)) == 0 || len >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (inet_pton(AF_INET, buf, addr) == 1)
        *family = AF_INET;
    else if (inet_pton(AF_INET6, buf, addr) == 1)
        *family = AF_INET6;
    else
        return -EINVAL;
    if (slash[1] < '0' || slash[1] > '9')
        return -EINVAL;
    n = strtoul(slash + 1, &end, 10);
    if (*end || n > (*family == AF_INET ? 32u : 128u))
        return -EINVAL;
    *prefix = (unsigned)n;
    return 0;
}

static int check_process(const struct wa_msg *m, struct wisp_err *err)
{
    const struct wisp_agent_process *p = &m->process;

    if (p->nargs == 0)
        return wisp_err_set(err, EINVAL, "a process needs at least one argument");
    for (size_t i = 0; i < p->nenv; i++) {
        const char *eq = strchr(p->env[i], '=');

        if (!eq || eq == p->env[i])
            return wisp_err_set(err, EINVAL, "environment entry %zu is not NAME=value", i);
    }
    if (p->cwd && !absolute(p->cwd))
        return wisp_err_set(err, EINVAL, "cwd '%s' is not absolute", p->cwd);
    if (p->has_umask && p->umask > 0777)
        return wisp_err_set(err, EINVAL, "umask %o is more than 0777", p->umask);
    for (size_t i = 0; i < p->nrlimits; i++) {
        if (wa_rlimit_from_name(p->rlimits[i].type) < 0)
            return wisp_err_set(err, EINVAL, "unknown rlimit '%s'", p->rlimits[i].type);
        if (p->rlimits[i].soft > p->rlimits[i].hard)
            return wisp_err_set(err, EINVAL, "%s: soft limit above the hard one",
                                p->rlimits[i].type);
    }
    for (int i = 0; i < 3; i++)
        if (p->stdio[i] > WISP_AGENT_STDIO_PIPE)
            return wisp_err_set(err, EINVAL, "stdio mode %u for fd %d", p->stdio[i], i);
    return 0;
}

static int check_container(const struct wa_msg *m, struct wisp_err *err)
{
    const struct wisp_agent_container *c = &m->ctr;

    if (!c->rootfs_tag == !c->rootfs_path)
        return wisp_err_set(err, EINVAL, "a container needs a root: a 9p tag or a path, one");
    if (c->rootfs_tag && !c->rootfs_tag[0])
        return wisp_err_set(err, EINVAL, "an empty 9p tag");
    if (c->rootfs_path && !absolute(c->rootfs_path))
        return wisp_err_set(err, EINVAL, "root path '%s' is not absolute", c->rootfs_path);
    if (c->hostname && !c->hostname[0])
        return wisp_err_set(err, EINVAL, "an empty hostname");
    for (size_t i = 0; i < c->nmounts; i++) {
        const struct wisp_agent_mount *mt = &c->mounts[i];

        if (!mt->type || !mt->type[0])
            return wisp_err_set(err, EINVAL, "mount %zu has no type", i);
        if (!absolute(mt->destination))
            return wisp_err_set(err, EINVAL, "mount %zu: destination '%s' is not absolute", i,
                                mt->destination ? mt->destination : "");
    }
    for (size_t i = 0; i < c->nfiles; i++) {
        if (!absolute(c->files[i].path))
            return wisp_err_set(err, EINVAL, "file %zu: path is not absolute", i);
        if (c->files[i].mode > 07777)
            return wisp_err_set(err, EINVAL, "file %zu: mode %o", i, c->files[i].mode);
    }
    return 0;
}

static int check_network(const struct wa_msg *m, struct wisp_err *err)
{
    const struct wisp_agent_network *n = &m->net;
    uint8_t addr[16];
    unsigned prefix;
    int family;

    for (size_t i = 0; i < n->nifaces; i++) {
        const struct wisp_agent_iface *f = &n->ifaces[i];

        if (!f->name || !f->name[0] || strchr(f->name, '/'))
            return wisp_err_set(err, EINVAL, "interface %zu has no valid name", i);
        for (size_t j = 0; j < f->naddresses; j++)
            if (wa_cidr_parse(f->addresses[j], &family, addr, &prefix) < 0)
                return wisp_err_set(err, EINVAL, "%s: '%s' is not ADDRESS/PREFIX", f->name,
                                    f->addresses[j]);
    }
    for (size_t i = 0; i < n->nroutes; i++) {
        const struct wisp_agent_route *rt = &n->routes[i];

        if (wa_cidr_parse(rt->destination, &family, addr, &prefix) < 0)
            return wisp_err_set(err, EINVAL,
                                "route %zu: destination '%s' is not "
                                "ADDRESS/PREFIX",
                                i, rt->destination ? rt->destination : "");
        if (rt->gateway && inet_pton(family, rt->gateway, addr) != 1)
            return wisp_err_set(err, EINVAL, "route %zu: gateway '%s' is not an address", i,
                                rt->gateway);
        if (!rt->gateway && !rt->device)
            return wisp_err_set(err, EINVAL, "route %zu needs a gateway or a device", i);
    }
    return 0;
}

static int check_answer(const struct wa_msg *m, struct wisp_err *err)
{
    int r = need(m, WT_ERRNO, "errno", err);

    if (r < 0)
        return r;
    if (m->errnum >= 4096)
        return wisp_err_set(err, EPROTO, "errno %u", m->errnum);
    if (m->errnum)
        return 0;
    switch (m->type & ~WA_RESPONSE) {
    case WA_HELLO:
        return need(m, WT_VERSION, "version", err);
    case WA_PROCESS_CREATE:
        return need(m, WT_PID, "pid", err);
    case WA_WAIT:
        return need(m, WT_STATUS, "status", err);
    }
    return 0;
}

int wa_msg_check(const struct wa_msg *m, struct wisp_err *err)
{
    int r;

    if (m->type & WA_RESPONSE)
        return check_answer(m, err);
    switch (m->type) {
    case WA_HELLO:
        return need(m, WT_VERSION, "version", err);
    case WA_CONTAINER_CREATE:
        if ((r = check_ids(m, false, err)) < 0)
            return r;
        return check_container(m, err);
    case WA_PROCESS_CREATE:
        if ((r = check_ids(m, true, err)) < 0)
            return r;
        return check_process(m, err);
    case WA_PROCESS_START:
    case WA_WAIT:
    case WA_PROCESS_DELETE:
        return check_ids(m, true, err);
    case WA_SIGNAL:
        if ((r = check_ids(m, !m->all, err)) < 0)
            return r;
        if (m->signo == 0 || m->signo > 64)
            return wisp_err_set(err, EINVAL, "signal %u (1-64)", m->signo);
        return 0;
    case WA_RESIZE:
        if ((r = check_ids(m, true, err)) < 0)
            return r;
        if (!m->process.rows || !m->process.cols)
            return wisp_err_set(err, EINVAL, "a terminal size needs rows and columns");
        return 0;
    case WA_PS:
    case WA_CONTAINER_DELETE:
        return check_ids(m, false, err);
    case WA_NETWORK:
        return check_network(m, err);
    case WA_SHUTDOWN:
        return 0;
    case WA_ATTACH:
        if ((r = check_ids(m, true, err)) < 0)
            return r;
        if (!wa_has(m, WT_STREAM) || m->stream > WISP_AGENT_STREAM_PTY)
            return wisp_err_set(err, EINVAL, "ATTACH needs a stream (0-3)");
        return 0;
    }
    return wisp_err_set(err, EPROTO, "unknown message type %u", m->type);
}
