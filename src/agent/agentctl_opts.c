/* wisp-agentctl's options: a process (--env, --uid, --rlimit, -t ...), a container (--rootfs-*,
 * --mount, --file ...) and a network (--addr, --route ...) from the command line. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent/agentctl.h"
#include "agent/proto.h"

enum {
    O_EXEC_ID = 256,
    O_ENV,
    O_CWD,
    O_UID,
    O_GID,
    O_GROUPS,
    O_UMASK,
    O_RLIMIT,
    O_NNP,
    O_SIZE,
    O_STDIN,
    O_ROOTFS_TAG,
    O_ROOTFS_PATH,
    O_READONLY,
    O_HOSTNAME,
    O_MOUNT,
    O_FILE,
    O_DEVICES,
    O_UP,
    O_MTU,
    O_ADDR,
    O_ROUTE,
    O_RESOLV,
    O_ALL,
    O_GRACE,
};

static const struct option long_opts[] = {
    {"exec-id", required_argument, NULL, O_EXEC_ID},
    {"env", required_argument, NULL, O_ENV},
    {"cwd", required_argument, NULL, O_CWD},
    {"uid", required_argument, NULL, O_UID},
    {"gid", required_argument, NULL, O_GID},
    {"groups", required_argument, NULL, O_GROUPS},
    {"umask", required_argument, NULL, O_UMASK},
    {"rlimit", required_argument, NULL, O_RLIMIT},
    {"no-new-privileges", no_argument, NULL, O_NNP},
    {"tty", no_argument, NULL, 't'},
    {"size", required_argument, NULL, O_SIZE},
    {"stdin", no_argument, NULL, O_STDIN},
    {"rootfs-tag", required_argument, NULL, O_ROOTFS_TAG},
    {"rootfs-path", required_argument, NULL, O_ROOTFS_PATH},
    {"readonly", no_argument, NULL, O_READONLY},
    {"hostname", required_argument, NULL, O_HOSTNAME},
    {"mount", required_argument, NULL, O_MOUNT},
    {"file", required_argument, NULL, O_FILE},
    {"default-devices", no_argument, NULL, O_DEVICES},
    {"up", required_argument, NULL, O_UP},
    {"mtu", required_argument, NULL, O_MTU},
    {"addr", required_argument, NULL, O_ADDR},
    {"route", required_argument, NULL, O_ROUTE},
    {"resolv-conf", required_argument, NULL, O_RESOLV},
    {"all", no_argument, NULL, O_ALL},
    {"grace", required_argument, NULL, O_GRACE},
    {NULL, 0, NULL, 0},
};

static int bad(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "wisp-agentctl %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputs(" (see --help)\n", stderr);
    va_end(ap);
    return -1;
}

static bool ctl_u32(const char *s, int base, uint32_t *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    if (!s || !*s || *s == '-')
        return false;
    v = strtoul(s, &end, base);
    if (errno || *end || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool ctl_u64(const char *s, uint64_t *out)
{
    char *end;

    errno = 0;
    if (strcmp(s, "unlimited") == 0) {
        *out = UINT64_MAX;
        return true;
    }
    if (!*s || *s == '-')
        return false;
    *out = strtoull(s, &end, 10);
    return !errno && !*end;
}

static struct wisp_agent_iface *iface(struct ctl_spec *s, const char *name, size_t len)
{
    for (size_t i = 0; i < s->net.nifaces; i++)
        if (strlen(s->ifaces[i].name) == len && strncmp(s->ifaces[i].name, name, len) == 0)
            return &s->ifaces[i];
    if (s->net.nifaces >= WISP_AGENT_IFACES_MAX || len == 0)
        return NULL;
    s->ifaces[s->net.nifaces].name = strndup(name, len);
    s->ifaces[s->net.nifaces].addresses = s->addrs[s->net.nifaces];
    return &s->ifaces[s->net.nifaces++];
}

/* TYPE:SOURCE:DEST[:OPT,OPT...] (SOURCE may be empty) */
static int parse_mount(const char *cmd, struct ctl_spec *s, const char *arg)
{
    size_t i = s->ctr.nmounts;
    char *str, *f[4] = {NULL, NULL, NULL, NULL}, *p;
    int n = 0;

    if (i >= CTL_LIST_MAX)
        return bad(cmd, "too many --mount (at most %s)", "64");
    str = s->mount_strs[i] = strdup(arg);
    for (p = str; n < 4; n++) {
        f[n] = p;
        if (n == 3 || !(p = strchr(p, ':')))
            break;
        *p++ = '\0';
    }
    if (!f[2] || !*f[0] || f[2][0] != '/')
        return bad(cmd, "--mount wants TYPE:SOURCE:/DEST[:OPTIONS], not '%s'", arg);
    s->mounts[i] = (struct wisp_agent_mount){.type = f[0],
                                             .source = *f[1] ? f[1] : NULL,
                                             .destination = f[2],
                                             .options = s->mount_opts[i]};
    for (char *o = f[3] ? strtok(f[3], ",") : NULL; o; o = strtok(NULL, ",")) {
        if (s->mounts[i].noptions >= WISP_AGENT_OPTIONS_MAX)
            return bad(cmd, "--mount '%s': too many options", arg);
        s->mount_opts[i][s->mounts[i].noptions++] = o;
    }
    s->ctr.nmounts++;
    return 0;
}

/* DEST=HOSTFILE: the host file's contents, bound over DEST in the container */
static int parse_file(const char *cmd, struct ctl_spec *s, const char *arg)
{
    const char *eq = strchr(arg, '=');
    struct wisp_agent_file *f = &s->files[s->ctr.nfiles];
    char *data;
    int fd;
    ssize_t n;

    if (s->ctr.nfiles >= WISP_AGENT_FILES_MAX || !eq || arg[0] != '/')
        return bad(cmd, "--file wants /DEST=HOSTFILE (at most 16), not '%s'", arg);
    if ((fd = open(eq + 1, O_RDONLY | O_CLOEXEC)) < 0)
        return bad(cmd, "--file: cannot open '%s'", eq + 1);
    data = malloc(WISP_AGENT_FILE_MAX);
    n = data ? read(fd, data, WISP_AGENT_FILE_MAX) : -1;
    close(fd);
    if (n < 0)
        return bad(cmd, "--file: cannot read '%s'", eq + 1);
    *f = (struct wisp_agent_file){
        .path = strndup(arg, (size_t)(eq - arg)), .data = data, .len = (size_t)n, .mode = 0644};
    s->ctr.nfiles++;
    return 0;
}

/* CIDR[,via=GW][,dev=IF] */
static int parse_route(const char *cmd, struct ctl_spec *s, const char *arg)
{
    size_t i = s->net.nroutes;
    char *str;

    if (i >= WISP_AGENT_ROUTES_MAX)
        return bad(cmd, "too many --route (at most %s)", "32");
    str = s->route_strs[i] = strdup(arg);
    s->routes[i] = (struct wisp_agent_route){.destination = strtok(str, ",")};
    for (char *o = strtok(NULL, ","); o; o = strtok(NULL, ",")) {
        if (strncmp(o, "via=", 4) == 0)
            s->routes[i].gateway = o + 4;
        else if (strncmp(o, "dev=", 4) == 0)
            s->routes[i].device = o + 4;
        else
            return bad(cmd, "--route wants CIDR[,via=GW][,dev=IF], not '%s'", arg);
    }
    s->net.nroutes++;
    return 0;
}

static int parse_rlimit(const char *cmd, struct ctl_spec *s, const char *arg)
{
    struct wisp_agent_rlimit *rl = &s->rlimits[s->proc.nrlimits];
    char *name = s->rlimit_names[s->proc.nrlimits], *colon, val[64];
    const char *eq = strchr(arg, '=');

    if (s->proc.nrlimits >= WISP_AGENT_RLIMITS_MAX || !eq || (size_t)(eq - arg) > 16 ||
        strlen(eq + 1) >= sizeof(val))
        return bad(cmd, "--rlimit wants NAME=SOFT[:HARD], not '%s'", arg);
    snprintf(name, 32, "RLIMIT_%.*s", (int)(eq - arg), arg);
    for (char *p = name; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    snprintf(val, sizeof(val), "%s", eq + 1);
    colon = strchr(val, ':');
    if (colon)
        *colon = '\0';
    if (wa_rlimit_from_name(name) < 0 || !ctl_u64(val, &rl->soft) ||
        !ctl_u64(colon ? colon + 1 : val, &rl->hard))
        return bad(cmd, "--rlimit wants NAME=SOFT[:HARD] (NOFILE=1024:4096), not '%s'", arg);
    rl->type = name;
    s->proc.nrlimits++;
    return 0;
}

static int parse_groups(const char *cmd, struct ctl_spec *s, const char *arg)
{
    char buf[1024], *tok;

    snprintf(buf, sizeof(buf), "%s", arg);
    for (tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (s->proc.ngids >= WISP_AGENT_GROUPS_MAX || !ctl_u32(tok, 10, &s->gids[s->proc.ngids]))
            return bad(cmd, "--groups wants GID,GID,... (at most 64), not '%s'", arg);
        s->proc.ngids++;
    }
    return 0;
}

static int parse_process_opt(const char *cmd, int c, struct ctl_spec *s)
{
    uint32_t v, w;

    switch (c) {
    case O_ENV:
        if (s->proc.nenv >= WISP_AGENT_ARGS_MAX || !strchr(optarg, '='))
            return bad(cmd, "--env wants NAME=VALUE, not '%s'", optarg);
        s->env[s->proc.nenv++] = optarg;
        return 0;
    case O_CWD:
        s->proc.cwd = optarg;
        return 0;
    case O_UID:
    case O_GID:
        if (!ctl_u32(optarg, 10, &v))
            return bad(cmd, "--uid/--gid want a number, not '%s'", optarg);
        *(c == O_UID ? &s->proc.uid : &s->proc.gid) = v;
        return 0;
    case O_GROUPS:
        return parse_groups(cmd, s, optarg);
    case O_UMASK:
        if (!ctl_u32(optarg, 8, &v) || v > 0777)
            return bad(cmd, "--umask wants an octal mask (022), not '%s'", optarg);
        s->proc.has_umask = true;
        s->proc.umask = v;
        return 0;
    case O_RLIMIT:
        return parse_rlimit(cmd, s, optarg);
    case O_NNP:
        s->proc.no_new_privileges = true;
        return 0;
    case 't':
        s->proc.terminal = true;
        return 0;
    case O_SIZE:
        if (sscanf(optarg, "%ux%u", &v, &w) != 2 || !v || !w || v > 65535 || w > 65535)
            return bad(cmd, "--size wants ROWSxCOLS (24x80), not '%s'", optarg);
        s->proc.rows = (uint16_t)v;
        s->proc.cols = (uint16_t)w;
        return 0;
    case O_STDIN:
        s->forward_stdin = true;
        return 0;
    }
    return 1;
}

static int parse_container_opt(const char *cmd, int c, struct ctl_spec *s)
{
    switch (c) {
    case O_ROOTFS_TAG:
        s->ctr.rootfs_tag = optarg;
        return 0;
    case O_ROOTFS_PATH:
        s->ctr.rootfs_path = optarg;
        return 0;
    case O_READONLY:
        s->ctr.rootfs_readonly = true;
        return 0;
    case O_HOSTNAME:
        s->ctr.hostname = optarg;
        return 0;
    case O_MOUNT:
        return parse_mount(cmd, s, optarg);
    case O_FILE:
        return parse_file(cmd, s, optarg);
    case O_DEVICES:
        s->ctr.default_devices = true;
        return 0;
    }
    return 1;
}

static int parse_net_opt(const char *cmd, int c, struct ctl_spec *s)
{
    const char *eq = strchr(optarg, '=');
    struct wisp_agent_iface *f;
    uint32_t v;

    switch (c) {
    case O_UP:
        if (!(f = iface(s, optarg, strlen(optarg))))
            return bad(cmd, "--up: bad or too many interfaces ('%s')", optarg);
        f->up = true;
        return 0;
    case O_MTU:
    case O_ADDR:
        if (!eq || !(f = iface(s, optarg, (size_t)(eq - optarg))))
            return bad(cmd, "--mtu/--addr want IF=VALUE, not '%s'", optarg);
        if (c == O_MTU) {
            if (!ctl_u32(eq + 1, 10, &v) || v < 68)
                return bad(cmd, "--mtu wants IF=N (N >= 68), not '%s'", optarg);
            f->mtu = v;
        } else {
            if (f->naddresses >= WISP_AGENT_ADDRS_MAX)
                return bad(cmd, "--addr: at most 8 per interface ('%s')", optarg);
            s->addrs[f - s->ifaces][f->naddresses++] = eq + 1;
            f->up = true;
        }
        return 0;
    case O_ROUTE:
        return parse_route(cmd, s, optarg);
    case O_RESOLV: {
        static char buf[WISP_AGENT_FILE_MAX + 1];
        int fd = open(optarg, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd >= 0 ? read(fd, buf, WISP_AGENT_FILE_MAX) : -1;

        if (fd >= 0)
            close(fd);
        if (n < 0)
            return bad(cmd, "--resolv-conf: cannot read '%s'", optarg);
        buf[n] = '\0';
        s->net.resolv_conf = buf;
        return 0;
    }
    }
    return 1;
}

int ctl_parse(const char *cmd, int argc, char **argv, struct ctl_spec *s, int *next)
{
    int c, r;

    s->exec_id = "";
    s->proc.env = s->env;
    s->proc.additional_gids = s->gids;
    s->proc.rlimits = s->rlimits;
    s->ctr.mounts = s->mounts;
    s->ctr.files = s->files;
    s->net.ifaces = s->ifaces;
    s->net.routes = s->routes;
    s->grace_ms = 2000;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+t", long_opts, NULL)) != -1) {
        if (c == '?' || c == ':')
            return bad(cmd, "unknown option or missing value: '%s'", argv[optind - 1]);
        if (c == O_EXEC_ID) {
            s->exec_id = optarg;
        } else if (c == O_ALL) {
            s->all = true;
        } else if (c == O_GRACE) {
            uint32_t v;

            if (!ctl_u32(optarg, 10, &v))
                return bad(cmd, "--grace wants milliseconds, not '%s'", optarg);
            s->grace_ms = v;
        } else {
            r = parse_process_opt(cmd, c, s);
            if (r == 1)
                r = parse_container_opt(cmd, c, s);
            if (r == 1)
                r = parse_net_opt(cmd, c, s);
            if (r < 0)
                return r;
        }
    }
    *next = optind;
    return 0;
}

void ctl_spec_free(struct ctl_spec *s)
{
    for (size_t i = 0; i < s->ctr.nmounts; i++)
        free(s->mount_strs[i]);
    for (size_t i = 0; i < s->ctr.nfiles; i++) {
        free((void *)s->files[i].path);
        free((void *)s->files[i].data);
    }
    for (size_t i = 0; i < s->net.nifaces; i++)
        free((void *)s->ifaces[i].name);
    for (size_t i = 0; i < s->net.nroutes; i++)
        free(s->route_strs[i]);
}
