/* Each network's dnsmasq (Debian's dnsmasq-base) for DHCP and, when asked, DNS: its
 * configuration written into the network's directory, the process spawned like a VM's (held
 * back until its pid is committed, watched through a pidfd on wispd's loop), restarted with
 * backoff when it dies, reattached by pid and start time after a wispd restart, stopped at
 * `net rm` (docs/wispd.md, "Networks"). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/evloop.h"
#include "network.h"
#include "registry.h"
#include "wispd.h"

#define READY_POLL_MS    20
#define READY_TIMEOUT_MS 10000
#define TERM_TO_KILL_MS  3000
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   30000
#define LOG_MAX          (1 << 20)

static const char *dnsmasq_path(void)
{
    static const char *const paths[] = {"/usr/sbin/dnsmasq", "/usr/bin/dnsmasq",
                                        "/usr/local/sbin/dnsmasq"};
    for (size_t i = 0; i < ARRAY_SIZE(paths); i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

static int write_config(struct network *n, struct wisp_err *err)
{
    char path[256], a[16], b[16], mask[16], gw[16];
    const struct netdef *def = &n->def;
    net_format_ipv4(def->range_start, a);
    net_format_ipv4(def->range_end, b);
    net_format_ipv4(net_mask(def->prefix), mask);
    net_format_ipv4(def->gateway, gw);
    snprintf(path, sizeof(path), "%s/dnsmasq.conf", n->dir);
    FILE *f = fopen(path, "we");
    if (!f)
        return wisp_err_sys(err, errno, "%s", path);
    fprintf(f,
            "# wispd's network '%s': written by wispd at each start of this dnsmasq\n"
            "interface=%s\nexcept-interface=lo\nbind-dynamic\n"
            "dhcp-range=%s,%s,%s,12h\ndhcp-option=option:router,%s\n"
            "dhcp-authoritative\ndhcp-lease-max=%u\n"
            "dhcp-leasefile=%s/leases\npid-file=%s/dnsmasq.pid\n"
            "no-hosts\nlog-facility=-\n",
            def->name, def->bridge, a, b, mask, gw, def->range_end - def->range_start + 1, n->dir,
            n->dir);
    if (def->dns) /* names the guests give in DHCP answered as NAME and NAME.<network> */
        fprintf(f, "domain=%s\nlocal=/%s/\nexpand-hosts\n", def->name, def->name);
    else
        fprintf(f, "port=0\n"); /* no DNS: nor is a DNS server offered by DHCP */
    if (fclose(f) != 0)
        return wisp_err_sys(err, errno, "%s", path);
    return 0;
}

/* Appends, and starts over past LOG_MAX so that a dnsmasq restarting for ever stays bounded. */
static int open_log(struct network *n, struct wisp_err *err)
{
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/dnsmasq.log", n->dir);
    bool big = stat(path, &st) == 0 && st.st_size > LOG_MAX;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (big ? O_TRUNC : 0), 0640);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s", path);
    return fd;
}

static void timer_fired(void *opaque);
static void process_ended(void *opaque, uint32_t events);

static void timer_arm(struct network *n, unsigned ms)
{
    if (!n->timer && evloop_add_timer(n->d->loop, timer_fired, n, &n->timer, NULL) < 0) {
        fprintf(stderr, "wispd: network %s: no timer (out of fds?)\n", n->def.name);
        return;
    }
    evloop_timer_arm(n->timer, (uint64_t)ms * 1000000, 0);
}

static int watch(struct network *n, struct wisp_err *err)
{
    return evloop_add_fd(n->d->loop, n->pidfd, EPOLLIN, process_ended, n, &n->pidfd_src, err);
}

/* The child: no signal blocked, its own session, the log as stdout and stderr, exec once
 * its pid is committed. */
static void child_exec(struct network *n, const char *path, int go, int log_fd)
{
    char b, conf[256];
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL); /* wispd blocks SIGTERM for its signalfd */
    setsid();
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    if (read(go, &b, 1) != 1)
        _exit(127);
    snprintf(conf, sizeof(conf), "--conf-file=%s/dnsmasq.conf", n->dir);
    char *argv[] = {(char *)path, "--keep-in-foreground", conf, NULL};
    execv(path, argv);
    dprintf(2, "wispd: exec %s: %s\n", path, strerror(errno));
    _exit(127);
}

int dnsmasq_start(struct network *n, struct wisp_err *err)
{
    const char *path = dnsmasq_path();
    if (!path)
        return wisp_err_set(err, ENOENT,
                            "network %s: dnsmasq is not installed (Debian: apt-get install "
                            "dnsmasq-base)",
                            n->def.name);
    int ret = write_config(n, err);
    if (ret < 0)
        return ret;
    char pidfile[256];
    snprintf(pidfile, sizeof(pidfile), "%s/dnsmasq.pid", n->dir);
    unlink(pidfile); /* its appearance tells that this dnsmasq is up */
    int log_fd = open_log(n, err), go[2];
    if (log_fd < 0)
        return log_fd;
    if (pipe2(go, O_CLOEXEC) < 0) {
        close(log_fd);
        return wisp_err_sys(err, errno, "pipe");
    }
    int pid = fork();
    if (pid == 0) {
        close(go[1]);
        child_exec(n, path, go[0], log_fd);
    }
    close(go[0]);
    close(log_fd);
    if (pid < 0) {
        close(go[1]);
        return wisp_err_sys(err, errno, "fork");
    }
    n->pid = pid;
    n->child = true;
    n->pidfd = pidfd_open(pid, 0);
    if (n->pidfd < 0 || read_starttime(pid, &n->starttime) < 0 ||
        registry_net_set_dnsmasq(n->d->reg, n->id, pid, n->starttime, err) < 0 ||
        watch(n, err) < 0) {
        ret = err->errnum ? -err->errnum : wisp_err_sys(err, errno, "pidfd_open");
        close(go[1]); /* the child exits without exec */
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (n->pidfd >= 0)
            close(n->pidfd);
        n->pidfd = -1;
        n->pid = 0;
        return ret;
    }
    if (write(go[1], "g", 1) != 1) {
    } /* a failure means the child is gone: its pidfd says so */
    close(go[1]);
    n->started_ms = registry_now_ms();
    n->start_timed_out = false;
    n->dns_state = DNSMASQ_STARTING;
    n->ready_polls = 0;
    timer_arm(n, READY_POLL_MS);
    return 0;
}

int dnsmasq_reattach(struct network *n, int pid, uint64_t starttime)
{
    uint64_t st;
    n->pidfd = pidfd_open(pid, 0);
    if (n->pidfd >= 0 && (read_starttime(pid, &st) < 0 || st != starttime)) {
        close(n->pidfd); /* the pid is another process's now */
        n->pidfd = -1;
    }
    if (n->pidfd < 0 || watch(n, NULL) < 0) {
        if (n->pidfd >= 0)
            close(n->pidfd);
        n->pidfd = -1;
        return -ESRCH;
    }
    n->pid = pid;
    n->starttime = starttime;
    n->child = false;
    n->started_ms = registry_now_ms();
    n->dns_state = DNSMASQ_RUNNING;
    return 0;
}

void dnsmasq_stop(struct network *n)
{
    if (n->pidfd < 0) {
        n->dns_state = DNSMASQ_STOPPED;
        return;
    }
    n->dns_state = DNSMASQ_STOPPING;
    pidfd_send_signal(n->pidfd, SIGTERM, NULL, 0);
    timer_arm(n, TERM_TO_KILL_MS);
}

void dnsmasq_release(struct network *n)
{
    evloop_source_remove(n->pidfd_src);
    n->pidfd_src = NULL;
    evloop_source_remove(n->timer);
    n->timer = NULL;
    if (n->pidfd >= 0)
        close(n->pidfd);
    n->pidfd = -1;
}

static bool pid_file_written(struct network *n)
{
    char path[256], buf[32];
    snprintf(path, sizeof(path), "%s/dnsmasq.pid", n->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t len = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[len > 0 ? len : 0] = '\0';
    return atoi(buf) == n->pid;
}

static void timer_fired(void *opaque)
{
    struct network *n = opaque;
    struct wisp_err err = {0};
    switch (n->dns_state) {
    case DNSMASQ_STARTING:
        if (pid_file_written(n)) {
            n->dns_state = DNSMASQ_RUNNING;
            net_dnsmasq_ready(n);
        } else if (++n->ready_polls * READY_POLL_MS >= READY_TIMEOUT_MS) {
            snprintf(n->last_exit, sizeof(n->last_exit), "not up within %d s: killed",
                     READY_TIMEOUT_MS / 1000);
            n->start_timed_out = true;
            pidfd_send_signal(n->pidfd, SIGKILL, NULL, 0);
        } else {
            timer_arm(n, READY_POLL_MS);
        }
        break;
    case DNSMASQ_STOPPING:
        pidfd_send_signal(n->pidfd, SIGKILL, NULL, 0);
        break;
    case DNSMASQ_STOPPED: /* a restart is due */
        if (n->removing)
            break;
        n->restarts++;
        fprintf(stderr, "wispd: network %s: restarting dnsmasq (restart %lld)\n", n->def.name,
                (long long)n->restarts);
        if (dnsmasq_start(n, &err) < 0) {
            fprintf(stderr, "wispd: network %s: %s\n", n->def.name, err.msg);
            n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2 : BACKOFF_FIRST_MS;
            if (n->backoff_ms > BACKOFF_MAX_MS)
                n->backoff_ms = BACKOFF_MAX_MS;
            timer_arm(n, n->backoff_ms);
        }
        break;
    case DNSMASQ_RUNNING:
        break;
    }
}

/* The last line of the dnsmasq's log: why it ended. */
static void add_log_reason(struct network *n)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/dnsmasq.log", n->dir);
    wispd_append_last_line(path, n->last_exit, sizeof(n->last_exit));
}

static void process_ended(void *opaque, uint32_t events)
{
    struct network *n = opaque;
    siginfo_t si = {0};
    bool known =
        n->child && waitid(P_PIDFD, (id_t)n->pidfd, &si, WEXITED | WNOHANG) == 0 && si.si_pid != 0;
    bool starting = n->dns_state == DNSMASQ_STARTING;
    if (n->start_timed_out) {
    } else if (known && si.si_code == CLD_EXITED) {
        snprintf(n->last_exit, sizeof(n->last_exit), "exited with status %d", si.si_status);
    } else if (known) {
        snprintf(n->last_exit, sizeof(n->last_exit), "killed by signal %d (%s)", si.si_status,
                 strsignal(si.si_status));
    } else {
        snprintf(n->last_exit, sizeof(n->last_exit), "ended (reattached: status unknown)");
    }
    if (starting)
        add_log_reason(n);
    evloop_source_remove(n->pidfd_src);
    n->pidfd_src = NULL;
    close(n->pidfd);
    n->pidfd = -1;
    n->pid = 0;
    n->dns_state = DNSMASQ_STOPPED;
    if (n->removing || n->waiter) {
        net_dnsmasq_ended(n, starting);
        return;
    }
    struct wisp_err err = {0};
    registry_net_set_dnsmasq(n->d->reg, n->id, 0, 0, &err);
    fprintf(stderr, "wispd: network %s: dnsmasq %s\n", n->def.name, n->last_exit);
    /* As a VM's restart policy: at once after 10 s of running, else 0.1 s, 0.2 s, ... 30 s. */
    if (registry_now_ms() - n->started_ms >= 10000)
        n->backoff_ms = 0;
    unsigned delay = n->backoff_ms ? n->backoff_ms : 1;
    n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (n->backoff_ms > BACKOFF_MAX_MS)
        n->backoff_ms = BACKOFF_MAX_MS;
    timer_arm(n, delay);
}
