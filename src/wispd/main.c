/* wispd: the daemon that keeps VMs (docs/wispd.md). Foreground; ends on SIGTERM or SIGINT
 * without touching the VMs, which the next wispd reattaches. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "api/http.h"
#include "common/evloop.h"
#include "common/parse.h"
#include "network.h"
#include "reclaim.h"
#include "registry.h"
#include "wispd.h"

static const char usage[] =
    "usage: wispd [--socket PATH] [--state-dir DIR] [--vmm PATH] [--console-log-max SIZE]\n"
    "             [--cgroups MODE] [--no-favor-dynmods] [--no-jail] [--jailer PATH]\n"
    "             [--jail-uid UID] [--jail-gid GID]\n"
    "             [--reclaim off|KEY=VALUE,...]\n"
    "\n"
    "The wisp daemon: keeps VM definitions in DIR/wispd.db (SQLite), starts each VM as its own\n"
    "wisp-vmm process, supervises it and serves the REST API (docs/wispd.md) on PATH. Runs in\n"
    "the foreground; SIGTERM or SIGINT ends wispd and leaves the VMs running: the next wispd\n"
    "reattaches to them.\n"
    "\n"
    "  --socket PATH     the API socket (default /run/wisp/wispd.sock); mode 0660 and group\n"
    "                    'wisp' when that group exists, else 0600 (root only)\n"
    "  --state-dir DIR   the registry, VM logs (DIR/logs) and VM API sockets (DIR/run)\n"
    "                    (default /var/lib/wisp)\n"
    "  --vmm PATH        the wisp-vmm to run (default: beside wispd, or ../vmm/wisp-vmm in\n"
    "                    a build tree)\n"
    "  --console-log-max SIZE\n"
    "                    each VM's console scrollback: wisp-vmm keeps the last SIZE to 1.5 x\n"
    "                    SIZE bytes of its console log on disk (K, M, G; default 1M, at\n"
    "                    least 8K)\n"
    "  --cgroups MODE    a cgroup per VM: auto (default: v2 when the unified hierarchy has\n"
    "                    the memory and pids controllers, else v1), v1, v2 or off\n"
    "  --no-favor-dynmods\n"
    "                    leave the kernel's cgroup_threadgroup_rwsem as it is: by default\n"
    "                    wispd holds a hidden cgroup hierarchy mounted with favordynmods while\n"
    "                    it runs, which makes each VM's move into its cgroups ~0.4 ms instead of\n"
    "                    an RCU grace period (5-20 ms here), at the cost of slightly dearer forks\n"
    "                    and exits host-wide (docs/wispd.md, \"cgroups\")\n"
    "  --no-jail         start VMs unjailed (by default each VM runs jailed, unless its\n"
    "                    definition says \"jail\": false: wispd makes the jail and the\n"
    "                    child it forks enters it and becomes the VMM, as wisp-jailer's\n"
    "                    child does, with no process left between wispd and the VMM)\n"
    "  --jailer PATH     exec this wisp-jailer for each jailed VM instead (the jailer then\n"
    "                    waits outside each VM as its reaper: one process more per VM)\n"
    "  --jail-uid UID, --jail-gid GID\n"
    "                    the unprivileged ids jailed VMMs run as (default 10100)\n"
    "  --reclaim off|KEY=VALUE,...\n"
    "                    the automatic balloon of VMs whose definition has \"balloon\":\n"
    "                    {\"auto\": true} (docs/memory.md): under host memory pressure their\n"
    "                    balloons are inflated, idle guests first, and deflated when a guest\n"
    "                    needs memory or the pressure is over. Keys (defaults): psi=PATH\n"
    "                    (/proc/pressure/memory; off: MemAvailable only), high=PCT (10) and\n"
    "                    low=PCT (1): PSI some avg10 from which pressure starts and below\n"
    "                    which it ends, calm_s=S (30): how long below low, avail_low_pct (10)\n"
    "                    and avail_high_pct (20): the same with MemAvailable without PSI,\n"
    "                    interval_ms (2000): the tick, step_mib (64): MiB per tick for all\n"
    "                    VMs, holdoff_s (60): no inflate after a guest needed memory,\n"
    "                    window_s (60): a guest's recent available memory, trigger_stall_ms\n"
    "                    (200): the PSI trigger's stall in 2 s. off: no automatic balloon\n"
    "  -h, --help        this text\n"
    "\n"
    "Exit status: 0 after SIGTERM/SIGINT, 1 when it cannot start, 2 for usage errors.\n";

static void signal_ready(void *opaque, uint32_t events)
{
    struct evloop *loop = opaque;
    evloop_quit(loop);
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return 16;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static void raise_limits(void)
{
    struct rlimit r;
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NOFILE, &r);
    }
    if (getrlimit(RLIMIT_NPROC, &r) == 0 && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_NPROC, &r);
    }
    getrlimit(RLIMIT_NOFILE, &r);
    fprintf(stderr, "wispd: RLIMIT_NOFILE %lu (hard %lu)%s\n", (unsigned long)r.rlim_cur,
            (unsigned long)r.rlim_max,
            r.rlim_max < 65536 ? ": wispd holds up to 3 fds per running VM, see GET /v1/limits"
                               : "");
}

/* A program beside wispd, or in a build tree ../SUB/NAME, else /usr/bin/NAME. */
static char *default_tool(const char *name, const char *sub)
{
    char exe[PATH_MAX], *p;
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *dir = dirname(exe);
        if (asprintf(&p, "%s/%s", dir, name) >= 0 && access(p, X_OK) == 0)
            return p;
        free(p);
        if (asprintf(&p, "%s/../%s/%s", dir, sub, name) >= 0 && access(p, X_OK) == 0)
            return p;
        free(p);
    }
    return asprintf(&p, "/usr/bin/%s", name) >= 0 ? p : NULL;
}

static int make_dirs(const char *state_dir, const char *sock, struct wisp_err *err)
{
    char path[PATH_MAX];
    const char *subs[] = {"", "/run", "/logs"};
    for (unsigned i = 0; i < 3; i++) {
        snprintf(path, sizeof(path), "%s%s", state_dir, subs[i]);
        if (mkdir(path, 0750) < 0 && errno != EEXIST)
            return wisp_err_sys(err, errno, "%s", path);
    }
    snprintf(path, sizeof(path), "%s", sock);
    char *dir = dirname(path);
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return wisp_err_sys(err, errno, "%s", dir);
    return 0;
}

/* 0660 with group wisp when the group exists, else 0600: root only. */
static void set_socket_access(const char *sock)
{
    struct group *g = getgrnam("wisp");
    if (g && chown(sock, (uid_t)-1, g->gr_gid) == 0)
        chmod(sock, 0660);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"state-dir", required_argument, NULL, 'd'},
                                         {"vmm", required_argument, NULL, 'v'},
                                         {"console-log-max", required_argument, NULL, 'c'},
                                         {"cgroups", required_argument, NULL, 'C'},
                                         {"no-jail", no_argument, NULL, 'n'},
                                         {"no-favor-dynmods", no_argument, NULL, 'F'},
                                         {"jailer", required_argument, NULL, 'j'},
                                         {"jail-uid", required_argument, NULL, 'u'},
                                         {"jail-gid", required_argument, NULL, 'g'},
                                         {"reclaim", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    const char *sock = "/run/wisp/wispd.sock", *state_dir = "/var/lib/wisp";
    const char *cgroups = "auto", *jailer = NULL;
    bool jail = true;
    uint32_t jail_ids[2] = {10100, 10100};
    static struct wispd d; /* large (placement's paths): not on the stack */
    struct wisp_err err = {0};
    struct reclaim_config reclaim;
    reclaim_config_defaults(&reclaim);
    d.console_log_max = 1 << 20;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 's')
            sock = optarg;
        else if (c == 'd')
            state_dir = optarg;
        else if (c == 'v')
            d.vmm_path = strdup(optarg);
        else if (c == 'c') {
            if (parse_size(optarg, 1, &d.console_log_max) < 0 || d.console_log_max < 8192) {
                fprintf(stderr, "wispd: --console-log-max: '%s' is not a size of 8K or more\n",
                        optarg);
                return 2;
            }
        } else if (c == 'C')
            cgroups = optarg;
        else if (c == 'n')
            jail = false;
        else if (c == 'F')
            d.place.no_dynmods = true;
        else if (c == 'j')
            jailer = optarg;
        else if (c == 'r' && reclaim_parse_options(&reclaim, optarg, &err) < 0) {
            fprintf(stderr, "wispd: %s\n", err.msg);
            return 2;
        } else if (c == 'r')
            continue;
        else if ((c == 'u' || c == 'g') &&
                 parse_unprivileged_id(c == 'u' ? "--jail-uid" : "--jail-gid", optarg,
                                       &jail_ids[c == 'g'], &err) < 0) {
            fprintf(stderr, "wispd: %s\n", err.msg);
            return 2;
        } else if (c == 'u' || c == 'g')
            continue;
        else if (c == 'h') {
            fputs(usage, stdout);
            return 0;
        } else {
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "wispd: unexpected argument '%s'\n%s", argv[optind], usage);
        return 2;
    }
    if (!d.vmm_path)
        d.vmm_path = default_tool("wisp-vmm", "vmm");
    d.img_path = default_tool("wisp-img", "img"); /* clones' overlays (overlay.c) */
    d.state_dir = realpath(state_dir, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_limits();
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (!d.state_dir) {
        if (mkdir(state_dir, 0750) < 0 && errno != EEXIST) {
            fprintf(stderr, "wispd: %s: %s\n", state_dir, strerror(errno));
            return 1;
        }
        d.state_dir = realpath(state_dir, NULL);
    }
    int ret = make_dirs(d.state_dir, sock, &err);
    if (ret == 0)
        ret = evloop_create(&d.loop, "wispd", &err);
    if (ret == 0)
        ret = evloop_add_fd(d.loop, sfd, EPOLLIN, signal_ready, d.loop, NULL, &err);
    if (ret == 0)
        ret = registry_open(&d.reg, d.state_dir, &err);
    if (ret == 0)
        ret = placement_init(&d, cgroups, jail, jailer, jail_ids[0], jail_ids[1], &err);
    if (ret == 0)
        ret = net_init(&d, &err); /* before the VMs: their taps need the bridges */
    if (ret == 0)
        ret = reclaim_init(&d, &reclaim, &err); /* before the VMs: a reattached one joins it */
    if (ret == 0)
        ret = wispd_recover(&d, &err);
    if (ret == 0) {
        unlink(sock);                  /* a wispd killed with -9 leaves its socket behind */
        d.base_fds = count_fds() + 24; /* the server's own fds and 16 clients at once */
        ret = wispd_serve(&d, sock, &err);
    }
    if (ret < 0) {
        fprintf(stderr, "wispd: %s\n", err.msg);
        cgroups_fini(&d.place); /* the parents it made, if no VM's cgroup is in them */
        return 1;
    }
    set_socket_access(sock);
    fprintf(stderr, "wispd: serving %s (state %s, %u VMs, %u running)\n", sock, d.state_dir,
            d.nr_vms, d.nr_live);
    evloop_run(d.loop);
    /* The VMs keep running; their waiting requests are answered 503 by the server. */
    for (unsigned h = 0; h < VM_HASH_SIZE; h++)
        for (struct vm *vm = d.hash[h]; vm; vm = vm->hash_next)
            vm->nr_waiters = 0;
    d.nr_event_waiters = 0;
    console_shutdown(&d);
    reclaim_fini(&d);
    api_server_destroy(d.server);
    registry_close(d.reg);
    cgroups_fini(&d.place);
    fprintf(stderr, "wispd: ended; the VMs go on\n");
    return 0;
}
