/* The VMs' lifecycle (docs/wispd.md, "Lifecycle"): each wisp-vmm spawned by fork/exec, held
 * back until its pid is committed to the registry, configured through its API socket, watched
 * through a pidfd on wispd's loop; stops, restarts with backoff, and the reattach of a
 * restarted wispd. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "api/http.h"
#include "common/cleanup.h"
#include "common/evloop.h"
#include "network.h"
#include "overlay.h"
#include "reclaim.h"
#include "registry.h"
#include "vmmclient.h"
#include "wispd.h"

#define API_TIMEOUT_MS   5000
#define CONNECT_WAIT_MS  5000
#define TERM_TO_KILL_MS  3000
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   30000

static const char *const state_names[] = {"stopped", "starting", "running", "paused", "stopping"};

const char *vm_state_name(enum vm_state s)
{
    return state_names[s];
}

static unsigned name_hash(const char *n)
{
    unsigned h = 5381;
    while (*n)
        h = h * 33 + (unsigned char)*n++;
    return h % VM_HASH_SIZE;
}

struct vm *wispd_find(struct wispd *d, const char *name)
{
    for (struct vm *vm = d->hash[name_hash(name)]; vm; vm = vm->hash_next)
        if (!strcmp(vm->name, name))
            return vm;
    return NULL;
}

json_t *vm_to_json(const struct vm *vm)
{
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:O}", "name", vm->name, "state",
                          vm_state_name(vm->state), "pid", (json_int_t)vm->pid, "restarts",
                          (json_int_t)vm->restarts, "last_exit", vm->last_exit, "api_sock",
                          vm->api_sock, "definition", vm->def);
    placement_json(vm, j);
    return j;
}

void wispd_event(struct wispd *d, const char *vm, const char *kind, const char *detail)
{
    int64_t id;
    struct wisp_err err = {0};
    if (registry_add_event(d->reg, vm, kind, detail, &id, &err) < 0)
        fprintf(stderr, "wispd: %s\n", err.msg);
    wispd_events_notify(d);
}

/* Answers every request waiting for this VM: status 0 is the VM's JSON, else an error. */
static void reply_waiters(struct vm *vm, unsigned status, const char *msg)
{
    for (unsigned i = 0; i < vm->nr_waiters; i++) {
        if (status == 200)
            api_reply_json(vm->waiters[i], 200, vm_to_json(vm));
        else
            api_reply_error(vm->waiters[i], status, "%s: %s", vm->name, msg);
    }
    vm->nr_waiters = 0;
}

static void add_waiter(struct vm *vm, struct api_request *req)
{
    if (!req)
        return;
    if (vm->nr_waiters == VM_MAX_WAITERS) {
        api_reply_error(req, 409, "%s: too many requests waiting for this VM", vm->name);
        return;
    }
    api_request_suspend(req);
    vm->waiters[vm->nr_waiters++] = req;
}

static int set_state(struct vm *vm, enum vm_state s, struct wisp_err *err)
{
    int ret = registry_set_state(vm->d->reg, vm->id, vm_state_name(s), vm->pid, vm->starttime,
                                 vm->api_sock, err);
    if (ret == 0)
        vm->state = s;
    return ret;
}

/* Field 22 of /proc/PID/stat: the start time in clock ticks since boot, which tells a pid
 * reused by another process from the one that was recorded. */
int read_starttime(int pid, uint64_t *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -EIO;
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    if (!p)
        return -EIO;
    unsigned long long st;
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d "
               "%*d %llu",
               &st) != 1)
        return -EIO;
    *out = st;
    return 0;
}

static void restart_timer(void *opaque);
static void schedule_restart(struct vm *vm);
static void start_notify(struct vm *vm, bool ok, const char *msg);
static void stop_timer_fired(void *opaque);

/* A VM's timer (stop stages, restart backoff) exists only while it is live or a restart is
 * due, so that a defined VM costs wispd no fd. ns 0 disarms. */
static void vm_timer_arm(struct vm *vm, uint64_t ns)
{
    if (!vm->timer && ns &&
        evloop_add_timer(vm->d->loop, stop_timer_fired, vm, &vm->timer, NULL) < 0) {
        fprintf(stderr, "wispd: %s: no timer (out of fds?)\n", vm->name);
        return;
    }
    if (vm->timer)
        evloop_timer_arm(vm->timer, ns, 0);
}

static void vm_timer_drop(struct vm *vm)
{
    evloop_source_remove(vm->timer);
    vm->timer = NULL;
}

static void stop_timer_fired(void *opaque)
{
    struct vm *vm = opaque;
    if (vm->state == VM_STOPPED) {
        restart_timer(vm);
        return;
    }
    if (vm->stop_stage < 2) {
        vm->stop_stage = 2;
        pidfd_send_signal(vm->pidfd, SIGTERM, NULL, 0);
        vm_timer_arm(vm, (uint64_t)TERM_TO_KILL_MS * 1000000);
    } else if (vm->stop_stage < 3) {
        vm->stop_stage = 3;
        placement_kill(vm);
    }
}

void wispd_append_last_line(const char *path, char *out, size_t size)
{
    char buf[256];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t end = lseek(fd, 0, SEEK_END);
    ssize_t n = pread(fd, buf, sizeof(buf) - 1,
                      end > (off_t)sizeof(buf) - 1 ? end - (off_t)sizeof(buf) + 1 : 0);
    close(fd);
    while (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *line = strrchr(buf, '\n');
    size_t len = strlen(out);
    snprintf(out + len, size - len, ": %s", line ? line + 1 : buf);
}

/* Appends the last line of the VM's wisp-vmm log to last_exit: why a start failed. */
static void add_vmm_reason(struct vm *vm)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/logs/%lld.vmm.log", vm->d->state_dir, (long long)vm->id);
    wispd_append_last_line(path, vm->last_exit, sizeof(vm->last_exit));
}

/* The wisp-vmm has exited (its pidfd is readable). */
static void vm_exited(void *opaque, uint32_t events)
{
    struct vm *vm = opaque;
    struct wispd *d = vm->d;
    siginfo_t si = {0};
    bool known = vm->child && waitid(P_PIDFD, (id_t)vm->pidfd, &si, WEXITED | WNOHANG) == 0 &&
                 si.si_pid != 0;
    bool failed = true;
    if (known && si.si_code == CLD_EXITED && vm->place.jailer_exec && si.si_status > 128 &&
        si.si_status < 128 + 65) { /* wisp-jailer's 128 + N: its VMM was killed by N */
        snprintf(vm->last_exit, sizeof(vm->last_exit), "killed by signal %d (%s) in its jail",
                 si.si_status - 128, strsignal(si.si_status - 128));
    } else if (known && si.si_code == CLD_EXITED) {
        snprintf(vm->last_exit, sizeof(vm->last_exit), "exited with status %d", si.si_status);
        failed = si.si_status != 0;
    } else if (known) {
        snprintf(vm->last_exit, sizeof(vm->last_exit), "killed by signal %d (%s)", si.si_status,
                 strsignal(si.si_status));
    } else {
        snprintf(vm->last_exit, sizeof(vm->last_exit),
                 "ended (status unknown: reattached, not wispd's child)");
    }
    evloop_source_remove(vm->pidfd_src);
    vm->pidfd_src = NULL;
    close(vm->pidfd);
    vm->pidfd = -1;
    vmm_client_cancel(vm->client);
    vm->client = NULL;
    reclaim_vm_ended(vm);
    vm_timer_drop(vm); /* inside its own callback is fine (evloop.h) */
    unlink(vm->api_sock);
    placement_release(vm); /* its cgroups, a jail its jailer left */
    net_vm_taps_down(vm);
    vm->pid = 0;
    vm->starttime = 0;
    d->nr_live--;
    bool requested = vm->stop_requested, was_starting = vm->state == VM_STARTING;
    if (was_starting && failed)
        add_vmm_reason(vm);
    if (was_starting)
        start_notify(vm, false, vm->last_exit);
    vm->stop_requested = false;
    struct wisp_err err = {0};
    if (vm->remove_pending) {
        vm->state = VM_STOPPED;
        if (vm_remove(vm, true, NULL, &err) < 0)
            fprintf(stderr, "wispd: %s\n", err.msg);
        return;
    }
    if (set_state(vm, VM_STOPPED, &err) < 0)
        fprintf(stderr, "wispd: %s\n", err.msg);
    registry_set_exit(d->reg, vm->id, vm->last_exit, vm->restarts, &err);
    wispd_event(d, vm->name, requested || !failed ? "stop" : "crash", vm->last_exit);
    console_vm_ended(vm);
    if (vm->restart_after_stop) { /* the waiters have their answer once it runs again */
        vm->restart_after_stop = false;
        if (vm_start(vm, NULL, &err) < 0)
            reply_waiters(vm, 500, err.msg);
        return;
    }
    if (was_starting && vm->start_error[0])
        reply_waiters(vm, 400, vm->start_error); /* wisp-vmm refused the start */
    else
        reply_waiters(vm, was_starting ? 500 : 200, vm->last_exit);
    vm->start_error[0] = '\0';
    const char *policy = json_string_value(json_object_get(vm->def, "restart_policy"));
    if (!requested && (!strcmp(policy, "always") || (!strcmp(policy, "on-failure") && failed)))
        schedule_restart(vm);
}

static void schedule_restart(struct vm *vm)
{
    /* A VM that ran 10 s or more starts again at once; one that keeps failing waits 0.1 s,
     * 0.2 s, ... up to 30 s between tries. */
    if (registry_now_ms() - vm->started_ms >= 10000)
        vm->backoff_ms = 0;
    unsigned delay = vm->backoff_ms ? vm->backoff_ms : 1;
    vm->backoff_ms = vm->backoff_ms ? vm->backoff_ms * 2 : BACKOFF_FIRST_MS;
    if (vm->backoff_ms > BACKOFF_MAX_MS)
        vm->backoff_ms = BACKOFF_MAX_MS;
    vm_timer_arm(vm, (uint64_t)delay * 1000000);
}

static void restart_timer(void *opaque)
{
    struct vm *vm = opaque;
    struct wisp_err err = {0};
    if (vm->state != VM_STOPPED)
        return;
    vm->restarts++;
    registry_set_exit(vm->d->reg, vm->id, vm->last_exit, vm->restarts, &err);
    wispd_event(vm->d, vm->name, "restart", "restart policy");
    if (vm_start(vm, NULL, &err) < 0) {
        wispd_event(vm->d, vm->name, "crash", err.msg);
        schedule_restart(vm);
    }
}

static int watch_pidfd(struct vm *vm, struct wisp_err *err)
{
    vm->d->nr_live++;
    return evloop_add_fd(vm->d->loop, vm->pidfd, EPOLLIN, vm_exited, vm, &vm->pidfd_src, err);
}

int vm_create(struct wispd *d, json_t *def, int64_t id, struct vm **out, struct wisp_err *err)
{
    struct vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return wisp_err_set(err, ENOMEM, "out of memory");
    vm->d = d;
    vm->id = id;
    vm->def = json_incref(def);
    vm->name = strdup(json_string_value(json_object_get(def, "name")));
    vm->pidfd = -1;
    snprintf(vm->api_sock, sizeof(vm->api_sock), "%s/run/%lld.sock", d->state_dir, (long long)id);
    if (!vm->name) {
        json_decref(vm->def);
        free(vm);
        return wisp_err_set(err, ENOMEM, "out of memory");
    }
    unsigned h = name_hash(vm->name);
    vm->hash_next = d->hash[h];
    d->hash[h] = vm;
    d->nr_vms++;
    net_vm_added(vm);
    *out = vm;
    return 0;
}

static void vm_free(struct vm *vm)
{
    struct wispd *d = vm->d;
    for (struct vm **p = &d->hash[name_hash(vm->name)]; *p; p = &(*p)->hash_next)
        if (*p == vm) {
            *p = vm->hash_next;
            break;
        }
    d->nr_vms--;
    net_vm_removed(vm);
    reclaim_vm_ended(vm);
    evloop_source_remove(vm->timer);
    start_notify(vm, false, "removed");
    json_decref(vm->def);
    free(vm->name);
    free(vm);
}

/* Tells clone.c how a start it asked for ended (once). */
static void start_notify(struct vm *vm, bool ok, const char *msg)
{
    free(vm->restore_state);
    free(vm->restore_mem);
    vm->restore_state = vm->restore_mem = NULL;
    void (*fn)(struct vm *, void *, bool, const char *) = vm->on_start;
    vm->on_start = NULL;
    if (fn)
        fn(vm, vm->on_start_opaque, ok, msg);
}

/* The requests that configure and start the VM (docs/api.md). */
static size_t build_requests(const struct vm *vm, struct vmm_request *r, size_t max)
{
    json_t *def = vm->def, *item;
    size_t n = 0, i;
    if (vm->restore_state)
        return clone_restore_requests(vm, r, max);
    char jp[160]; /* the paths the VMM opens: in its jail, or the host's */
    json_t *boot = json_pack("{s:s}", "kernel_image_path",
                             placement_path(vm, "kernel", NULL,
                                            json_string_value(json_object_get(def, "kernel")), jp,
                                            sizeof(jp)));
    if (json_object_get(def, "initrd"))
        json_object_set_new(
            boot, "initrd_path",
            json_string(placement_path(vm, "initrd", NULL,
                                       json_string_value(json_object_get(def, "initrd")), jp,
                                       sizeof(jp))));
    if (json_object_get(def, "cmdline"))
        json_object_set(boot, "boot_args", json_object_get(def, "cmdline"));
    r[n++] = (struct vmm_request){"PUT", strdup("/boot-source"), json_dumps(boot, 0)};
    json_decref(boot);
    json_t *mc = json_pack("{s:O, s:O}", "vcpu_count", json_object_get(def, "vcpus"),
                           "mem_size_mib", json_object_get(def, "memory_mib"));
    if (json_is_true(json_object_get(def, "ksm")))
        json_object_set_new(mc, "ksm", json_true());
    r[n++] = (struct vmm_request){"PUT", strdup("/machine-config"), json_dumps(mc, 0)};
    json_decref(mc);
    json_array_foreach(json_object_get(def, "pmem"), i, item)
    {
        if (n + 4 >= max)
            break;
        const char *id = json_string_value(json_object_get(item, "id"));
        json_t *pm = json_pack("{s:s, s:s, s:b}", "id", id, "path_on_host",
                               placement_path(vm, "pmem", id,
                                              json_string_value(json_object_get(item, "path")), jp,
                                              sizeof(jp)),
                               "root_device", json_is_true(json_object_get(item, "root")));
        if (json_object_get(item, "mode"))
            json_object_set(pm, "mode", json_object_get(item, "mode"));
        char *path;
        if (asprintf(&path, "/pmem/%s", id) < 0)
            path = NULL;
        r[n++] = (struct vmm_request){"PUT", path, json_dumps(pm, 0)};
        json_decref(pm);
    }
    json_array_foreach(json_object_get(def, "drives"), i, item)
    {
        if (n + 4 >= max)
            break;
        const char *id = json_string_value(json_object_get(item, "id"));
        json_t *dr = json_pack(
            "{s:O, s:s, s:b, s:b}", "drive_id", json_object_get(item, "id"), "path_on_host",
            placement_path(vm, "drive", id, json_string_value(json_object_get(item, "path")), jp,
                           sizeof(jp)),
            "is_root_device", json_is_true(json_object_get(item, "root")), "is_read_only",
            json_is_true(json_object_get(item, "read_only")));
        if (json_object_get(item, "format"))
            json_object_set(dr, "format", json_object_get(item, "format"));
        char *path;
        if (asprintf(&path, "/drives/%s", json_string_value(json_object_get(item, "id"))) < 0)
            path = NULL;
        r[n++] = (struct vmm_request){"PUT", path, json_dumps(dr, 0)};
        json_decref(dr);
    }
    json_array_foreach(json_object_get(def, "nics"), i, item)
    {
        if (n + 4 >= max)
            break;
        char tap[16];
        json_t *ni = json_pack("{s:O, s:s}", "iface_id", json_object_get(item, "id"),
                               "host_dev_name", net_nic_tap(vm, i, item, tap));
        if (json_object_get(item, "mac"))
            json_object_set(ni, "guest_mac", json_object_get(item, "mac"));
        char *path;
        if (asprintf(&path, "/network-interfaces/%s",
                     json_string_value(json_object_get(item, "id"))) < 0)
            path = NULL;
        r[n++] = (struct vmm_request){"PUT", path, json_dumps(ni, 0)};
        json_decref(ni);
    }
    if (json_object_get(def, "console")) {
        json_t *w = json_pack("{s:O}", "console", json_object_get(def, "console"));
        r[n++] = (struct vmm_request){"PUT", strdup("/wisp"), json_dumps(w, 0)};
        json_decref(w);
    }
    if (json_object_get(def, "vsock"))
        r[n++] = (struct vmm_request){"PUT", strdup("/vsock"),
                                      json_dumps(json_object_get(def, "vsock"), 0)};
    if (json_object_get(def, "balloon"))
        r[n++] = (struct vmm_request){"PUT", strdup("/balloon"), reclaim_vmm_balloon_body(def)};
    r[n++] = (struct vmm_request){"PUT", strdup("/actions"),
                                  strdup("{\"action_type\": \"InstanceStart\"}")};
    return n;
}

static void start_done(void *opaque, int status, const char *message)
{
    struct vm *vm = opaque;
    struct wisp_err err = {0};
    vm->client = NULL;
    if (status < 0) {
        snprintf(vm->last_exit, sizeof(vm->last_exit), "start failed: %s", message);
        vm->stop_requested = true;
        vm->stop_stage = 3;
        placement_kill(vm);
        /* the waiters are answered once the process has gone, so that the VM is stopped
         * when they hear of it */
        snprintf(vm->start_error, sizeof(vm->start_error), "%s", message);
        start_notify(vm, false, message);
        return;
    }
    if (set_state(vm, VM_RUNNING, &err) < 0) {
        placement_kill(vm);
        reply_waiters(vm, 500, err.msg);
        return;
    }
    wispd_event(vm->d, vm->name, "start", "");
    reclaim_vm_running(vm);
    reply_waiters(vm, 200, NULL);
    start_notify(vm, true, "");
}

/* The child: its own session, stdout and stderr to the VM's log, and exec only once the
 * parent has committed its pid (the byte on `go`); if wispd dies first the pipe ends and the
 * child exits without becoming a VM, so there is never a wisp-vmm the registry does not name. */
static void child_exec(struct vm *vm, int go, int in_fd, int log_fd, int vmm_log_fd, int api_fd)
{
    char b;
    setsid();
    dup2(in_fd, 0);      /* the console's input FIFO (console.c) */
    dup2(log_fd, 1);     /* COM1's console */
    dup2(vmm_log_fd, 2); /* wisp-vmm's messages */
    if (read(go, &b, 1) != 1)
        _exit(127);
    /* the API socket as fd 3 (--api-sock-fd 3), after the read: go may have been fd 3 */
    if (api_fd >= 0 && (api_fd == 3 ? fcntl(3, F_SETFD, 0) : dup2(api_fd, 3)) < 0)
        _exit(127);
    placement_child(vm); /* affinity, memory policy, then the exec of wisp-jailer or wisp-vmm */
}

/* The VM's API socket, bound and listening before its VMM exists: wispd connects and sends the
 * configuration at once, and it waits in the socket until wisp-vmm (--api-sock-fd) reads it. */
static int api_listen(struct vm *vm, struct wisp_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(vm->api_sock) >= sizeof(sa.sun_path))
        return wisp_err_set(err, ENAMETOOLONG, "%s: longer than a socket address allows",
                            vm->api_sock);
    memcpy(sa.sun_path, vm->api_sock, strlen(vm->api_sock) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s: socket", vm->api_sock);
    /* fchmod before bind: the socket file is made 0600 (root's only) */
    if (fchmod(fd, 0600) < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(fd, 8) < 0) {
        int e = errno;
        close(fd);
        unlink(vm->api_sock);
        return wisp_err_sys(err, e, "%s: the VM's API socket", vm->api_sock);
    }
    return fd;
}

int vm_start(struct vm *vm, struct api_request *req, struct wisp_err *err)
{
    struct wispd *d = vm->d;
    if (vm->state != VM_STOPPED)
        return wisp_err_set(err, EBUSY, "%s is %s", vm->name, vm_state_name(vm->state));
    int ret =
        wispd_check_limits(d, (unsigned)json_integer_value(json_object_get(vm->def, "vcpus")), err);
    if (ret < 0)
        return ret;
    char log_path[256];
    snprintf(log_path, sizeof(log_path), "%s/logs/%lld.log", d->state_dir, (long long)vm->id);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (log_fd < 0)
        return wisp_err_sys(err, errno, "%s", log_path);
    snprintf(log_path, sizeof(log_path), "%s/logs/%lld.vmm.log", d->state_dir, (long long)vm->id);
    int vmm_log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (vmm_log_fd < 0) {
        close(log_fd);
        return wisp_err_sys(err, errno, "%s", log_path);
    }
    int go[2], in_fd = console_open_input(vm, err);
    if (in_fd < 0 || pipe2(go, O_CLOEXEC) < 0) {
        ret = in_fd < 0 ? in_fd : wisp_err_sys(err, errno, "pipe");
        if (in_fd >= 0)
            close(in_fd);
        close(log_fd);
        close(vmm_log_fd);
        return ret;
    }
    ret = placement_prepare(vm, err); /* its cgroups, NUMA node, jail: docs/wispd.md */
    if (ret < 0) {
        close(log_fd);
        close(vmm_log_fd);
        close(go[0]);
        close(go[1]);
        return ret;
    }
    unlink(vm->api_sock); /* left by a VM killed with -9 while wispd was away: it is gone */
    int api_fd = -1;
    ret = net_vm_taps_up(vm, err);
    bool taps = ret == 0;
    if (ret == 0 && !vm->place.jailer_exec) /* else wisp-vmm binds it in its jail */
        ret = api_fd = api_listen(vm, err);
    if (ret < 0) {
        close(go[0]);
        close(go[1]);
        close(in_fd);
        close(log_fd);
        close(vmm_log_fd);
        placement_release(vm);
        if (taps)
            net_vm_taps_down(vm);
        return ret;
    }
    pid_t pid = placement_fork(vm);
    if (pid == 0) {
        close(go[1]);
        child_exec(vm, go[0], in_fd, log_fd, vmm_log_fd, api_fd);
    }
    int fork_errno = errno;
    close(go[0]);
    close(in_fd);
    close(log_fd);
    close(vmm_log_fd);
    if (api_fd >= 0)
        close(api_fd); /* the VMM's now */
    if (pid < 0) {
        bool jailed = vm->place.jailed;
        close(go[1]);
        unlink(vm->api_sock);
        placement_release(vm);
        net_vm_taps_down(vm);
        return wisp_err_sys(err, fork_errno, jailed ? "clone (the jail's namespaces)" : "fork");
    }
    vm->pidfd = pidfd_open(pid, 0);
    vm->pid = pid;
    vm->child = true;
    if (vm->pidfd < 0 || placement_join(vm, pid, err) < 0 ||
        read_starttime(pid, &vm->starttime) < 0 || set_state(vm, VM_STARTING, err) < 0 ||
        watch_pidfd(vm, err) < 0) {
        ret = err->errnum ? -err->errnum : wisp_err_sys(err, errno, "pidfd_open");
        close(go[1]); /* the child exits without exec */
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (vm->pidfd >= 0)
            close(vm->pidfd);
        vm->pidfd = -1;
        vm->pid = 0;
        vm->state = VM_STOPPED;
        unlink(vm->api_sock);
        placement_release(vm);
        net_vm_taps_down(vm);
        return ret;
    }
    if (write(go[1], "g", 1) != 1) {
    } /* a failure means the child is gone: its pidfd says so */
    close(go[1]);
    vm->started_ms = registry_now_ms();
    vm->stop_stage = 0;
    struct vmm_request reqs[64];
    size_t n = build_requests(vm, reqs, ARRAY_SIZE(reqs));
    ret = vmm_client_run(&vm->client, d->loop, vm->api_sock, reqs, n, CONNECT_WAIT_MS,
                         API_TIMEOUT_MS, start_done, vm, err);
    if (ret < 0) {
        vm->stop_requested = true;
        placement_kill(vm);
        return ret;
    }
    add_waiter(vm, req);
    return 0;
}

static void ctrl_alt_del_done(void *opaque, int status, const char *message)
{
    struct vm *vm = opaque;
    vm->client = NULL;
    /* Not taken (wisp-vmm's machine model may have no key to press): SIGTERM at once. */
    if (status < 0 && vm->stop_stage < 2)
        stop_timer_fired(vm);
}

int vm_stop(struct vm *vm, bool force, struct api_request *req, struct wisp_err *err)
{
    if (vm->state == VM_STOPPED)
        return wisp_err_set(err, EALREADY, "%s is stopped", vm->name);
    vm->stop_requested = true;
    vm_timer_arm(vm, 0);
    if (vm->state != VM_STOPPING) {
        vmm_client_cancel(vm->client);
        vm->client = NULL;
        int ret = set_state(vm, VM_STOPPING, err);
        if (ret < 0)
            return ret;
    }
    if (force || vm->stop_stage >= 1) {
        vm->stop_stage = 3;
        placement_kill(vm);
    } else {
        vm->stop_stage = 1;
        struct vmm_request r = {"PUT", strdup("/actions"),
                                strdup("{\"action_type\": \"SendCtrlAltDel\"}")};
        unsigned t = (unsigned)json_integer_value(json_object_get(vm->def, "stop_timeout_s"));
        vm_timer_arm(vm, (uint64_t)t * 1000000000ull + 1);
        if (vmm_client_run(&vm->client, vm->d->loop, vm->api_sock, &r, 1, 0, API_TIMEOUT_MS,
                           ctrl_alt_del_done, vm, NULL) < 0)
            stop_timer_fired(vm);
    }
    add_waiter(vm, req);
    return 0;
}

int vm_restart(struct vm *vm, struct api_request *req, struct wisp_err *err)
{
    if (vm->state == VM_STOPPED)
        return vm_start(vm, req, err);
    vm->restart_after_stop = true;
    return vm_stop(vm, false, req, err);
}

static void pause_done(void *opaque, int status, const char *message)
{
    struct vm *vm = opaque;
    struct wisp_err err = {0};
    vm->client = NULL;
    if (status < 0) {
        reply_waiters(vm, 400, message);
        return;
    }
    bool paused = vm->state == VM_RUNNING;
    if (set_state(vm, paused ? VM_PAUSED : VM_RUNNING, &err) < 0) {
        reply_waiters(vm, 500, err.msg);
        return;
    }
    wispd_event(vm->d, vm->name, paused ? "pause" : "resume", "");
    reply_waiters(vm, 200, NULL);
}

int vm_pause(struct vm *vm, bool pause, struct api_request *req, struct wisp_err *err)
{
    if (vm->state != (pause ? VM_RUNNING : VM_PAUSED) || vm->client)
        return wisp_err_set(err, EBUSY, "%s is %s%s", vm->name, vm_state_name(vm->state),
                            vm->client ? " (a request to it is under way)" : "");
    struct vmm_request r = {"PATCH", strdup("/vm"),
                            strdup(pause ? "{\"state\": \"Paused\"}" : "{\"state\": \"Resumed\"}")};
    int ret = vmm_client_run(&vm->client, vm->d->loop, vm->api_sock, &r, 1, 0, API_TIMEOUT_MS,
                             pause_done, vm, err);
    if (ret == 0)
        add_waiter(vm, req);
    return ret;
}

int vm_remove(struct vm *vm, bool force, struct api_request *req, struct wisp_err *err)
{
    struct wispd *d = vm->d;
    if (vm->state != VM_STOPPED) {
        if (!force)
            return wisp_err_set(err, EBUSY, "%s is %s (stop it first, or rm -f)", vm->name,
                                vm_state_name(vm->state));
        int ret = registry_set_remove_pending(d->reg, vm->id, err);
        if (ret < 0)
            return ret;
        vm->remove_pending = true;
        return vm_stop(vm, true, req, err);
    }
    int ret = registry_remove(d->reg, vm->id, err);
    if (ret < 0)
        return ret;
    char log_path[256];
    snprintf(log_path, sizeof(log_path), "%s/logs/%lld.log", d->state_dir, (long long)vm->id);
    unlink(log_path);
    snprintf(log_path, sizeof(log_path), "%s/logs/%lld.vmm.log", d->state_dir, (long long)vm->id);
    unlink(log_path);
    console_vm_removed(vm);
    overlay_vm_removed(d, vm); /* a clone's own overlays */
    cgroup_vm_remove(d, vm);   /* if the end's removal found it busy */
    wispd_event(d, vm->name, "remove", "");
    for (unsigned i = 0; i < vm->nr_waiters; i++)
        api_reply_empty(vm->waiters[i]);
    if (req)
        api_reply_empty(req);
    vm_free(vm);
    return 0;
}

/* One registry row at start-up: the VM's process, if it still runs, is watched again without
 * being touched; one half-started is killed; one that ended meanwhile is recorded stopped. */
static int recover_row(const struct registry_row *row, void *opaque)
{
    struct wispd *d = opaque;
    struct wisp_err err = {0};
    json_t *def = json_loads(row->definition, 0, NULL);
    struct vm *vm;
    if (!def || vm_create(d, def, row->id, &vm, &err) < 0) {
        fprintf(stderr, "wispd: %s: the definition does not load: skipped\n", row->name);
        json_decref(def);
        return 0;
    }
    json_decref(def);
    vm->restarts = row->restarts;
    vm->remove_pending = row->remove_pending;
    snprintf(vm->last_exit, sizeof(vm->last_exit), "%s", row->last_exit);
    if (row->api_sock[0]) /* a jailed VM's is in its jail */
        snprintf(vm->api_sock, sizeof(vm->api_sock), "%s", row->api_sock);
    placement_reattach(vm);
    uint64_t st = 0;
    if (strcmp(row->state, "stopped") && row->pid > 0) {
        vm->pidfd = pidfd_open((int)row->pid, 0);
        if (vm->pidfd >= 0 && (read_starttime((int)row->pid, &st) < 0 || st != row->starttime)) {
            close(vm->pidfd); /* the pid is another process's now */
            vm->pidfd = -1;
        }
    }
    if (vm->pidfd < 0) {
        net_vm_taps_down(vm); /* left if wispd ended before the VM's end */
        vm->state = strcmp(row->state, "stopped") ? VM_RUNNING : VM_STOPPED;
        if (vm->state == VM_STOPPED && !vm->remove_pending)
            return 0;
        placement_release(vm); /* its cgroups and jail, if they outlived it */
        /* It ended while wispd was not running. */
        snprintf(vm->last_exit, sizeof(vm->last_exit), "ended while wispd was not running");
        if (vm->remove_pending) {
            vm->state = VM_STOPPED;
            vm_remove(vm, true, NULL, &err);
            return 0;
        }
        if (set_state(vm, VM_STOPPED, &err) < 0)
            return 0;
        wispd_event(d, vm->name, "crash", vm->last_exit);
        const char *policy = json_string_value(json_object_get(vm->def, "restart_policy"));
        if (strcmp(row->state, "stopping") && strcmp(policy, "no"))
            schedule_restart(vm);
        return 0;
    }
    vm->pid = (int)row->pid;
    vm->starttime = row->starttime;
    vm->child = false;
    vm->started_ms = row->created_ms;
    vm->state = !strcmp(row->state, "paused")     ? VM_PAUSED
                : !strcmp(row->state, "starting") ? VM_STARTING
                : !strcmp(row->state, "stopping") ? VM_STOPPING
                                                  : VM_RUNNING;
    if (watch_pidfd(vm, &err) < 0)
        return 0;
    if (vm->state == VM_STARTING || vm->state == VM_STOPPING || vm->remove_pending) {
        /* Half-configured, or being stopped: wispd cannot know how far it got. */
        snprintf(vm->last_exit, sizeof(vm->last_exit), "wispd ended during its %s",
                 vm->state == VM_STARTING ? "start" : "stop");
        vm->stop_requested = true;
        vm->stop_stage = 3;
        set_state(vm, VM_STOPPING, &err);
        placement_kill(vm);
    } else {
        wispd_event(d, vm->name, "reattach", "");
        reclaim_vm_running(vm);
    }
    return 0;
}

int wispd_recover(struct wispd *d, struct wisp_err *err)
{
    return registry_for_each(d->reg, recover_row, d, err);
}
