/* A container's VM: sizing from config.json, cgroups, wisp-vmm's command line, the end. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/client.h"
#include "common/cleanup.h"
#include "common/io.h"
#include "jail/jail.h"
#include "oci.h"
#include "template.h"
#include "vm.h"

void oci_vm_file(const struct oci_container *c, const char *jail_root, const char *name, char *buf,
                 size_t len)
{
    char dir[PATH_MAX], rel[PATH_MAX];

    snprintf(rel, sizeof(rel), "%s%s%s", jail_root ? jail_root : "", jail_root ? "/" : "", name);
    oci_container_dir(c->id, dir, sizeof(dir));
    if (strlen(dir) + strlen(rel) + 2 <= sizeof(((struct sockaddr_un *)0)->sun_path))
        snprintf(buf, len, "%s/%s", dir, rel);
    else
        oci_container_path(c, rel, buf, len);
}

const char *oci_vm_jail_root(const struct oci_container *c)
{
    const char *r =
        json_string_value(json_object_get(json_object_get(c->state, "wisp"), "jail_root"));
    /* wisp-oci's own file, in a root-only directory: still, nothing but a relative path */
    return r && r[0] != '/' && !strstr(r, "..") ? r : NULL;
}

void oci_vsock_path(const struct oci_container *c, char *buf, size_t len)
{
    oci_vm_file(c, oci_vm_jail_root(c), "vsock.sock", buf, len);
}

void oci_vm_init(struct oci_vm *vm, const struct oci_container *c, const struct oci_guest *g)
{
    memset(vm, 0, sizeof(*vm));
    vm->pid = -1;
    oci_container_dir(c->id, vm->dir, sizeof(vm->dir));
    if (g->jail) {
        const char *slash = strrchr(g->vmm, '/');
        snprintf(vm->jail_root, sizeof(vm->jail_root), "%.255s/" OCI_JAIL_NAME "/root",
                 slash ? slash + 1 : g->vmm);
    }
    oci_vm_file(c, vm->jail_root[0] ? vm->jail_root : NULL, "vsock.sock", vm->vsock_path,
                sizeof(vm->vsock_path));
}

/* A file the VMM makes in its working directory, for this process (the monitor). */
static void vm_file(const struct oci_vm *vm, const struct oci_container *c, const char *name,
                    char *buf, size_t len)
{
    oci_vm_file(c, vm->jail_root[0] ? vm->jail_root : NULL, name, buf, len);
}

static void size_vm(struct oci_vm *vm, const struct oci_spec *spec, const struct oci_guest *g)
{
    long online = sysconf(_SC_NPROCESSORS_ONLN);

    vm->mem_mib = g->mem_mib;
    if (spec->memory_limit)
        vm->mem_mib = (unsigned)((spec->memory_limit + (1 << 20) - 1) >> 20) + g->overhead_mib;
    vm->vcpus = spec->vcpus ? spec->vcpus : g->vcpus;
    if (online > 0 && vm->vcpus > (unsigned)online)
        vm->vcpus = (unsigned)online;
    if (vm->vcpus == 0)
        vm->vcpus = 1;
}

void oci_vm_cmdline(const struct oci_guest *g, char *buf, size_t len)
{
    /* A restored template's clock jumps by the time since its snapshot: Linux's RCU stall and
     * lockup detectors would take that for starvation and dump stacks on the serial console,
     * which under PVM costs the guest seconds of emulated ring 0 per restore. */
    snprintf(buf, len,
             "console=ttyS0 quiet panic=-1 reboot=k rcupdate.rcu_cpu_stall_suppress=1 "
             "nowatchdog %s %s",
             g->cmdline, OCI_AGENT_CMDLINE);
}

int oci_vmm_api(const char *sock, const char *method, const char *path, const char *body,
                int timeout_s, struct wisp_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct timeval tv = {timeout_s, 0};
    char head[512], resp[1024];
    cleanup_close int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    size_t got = 0;
    int n;

    if (strlen(sock) >= sizeof(sa.sun_path))
        return wisp_err_set(err, ENAMETOOLONG, "the VM's API socket %s: too long a path", sock);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return wisp_err_sys(err, errno, "the VM's API socket");
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    n = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 method, path, strlen(body));
    if (wisp_write_all(s, head, (size_t)n) < 0 || wisp_write_all(s, body, strlen(body)) < 0)
        return wisp_err_sys(err, errno, "the VM's API socket: write");
    while (got < sizeof(resp) - 1) {
        ssize_t k = read(s, resp + got, sizeof(resp) - 1 - got);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    resp[got] = 0;
    if (strncmp(resp, "HTTP/1.1 204", 12) != 0) {
        const char *msg = strstr(resp, "\r\n\r\n");
        return wisp_err_set(err, EIO, "%s %s: %s", method, path,
                            !got  ? "no answer from wisp-vmm"
                            : msg ? msg + 4
                                  : resp);
    }
    return 0;
}

/* wisp-jailer's part of the command line (docs/security.md, "wisp-oci's jail"): the jail in
 * the state directory (<dir>/<exec-name>/vm/root), the kernel and initramfs (or a template's
 * snapshot) bound read-only, the rootfs and bind shares bound at /rootfs and /bindN
 * (read-only when the spec says so), a pid namespace with its own /proc (the 9p server reopens
 * files through /proc/self/fd), and the file capabilities the 9p server needs: to serve a
 * writable share as UID, CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER and CAP_FSETID; read-only
 * shares only, CAP_DAC_READ_SEARCH. wisp-vmm's own arguments follow the "--". */
struct jail_argv {
    char uid[16], gid[16], kernel[PATH_MAX + 16], initrd[PATH_MAX + 16];
    char rootfs[PATH_MAX + 16], binds[OCI_MAX_BINDS][PATH_MAX + 16];
    char state[PATH_MAX + 64], mem[PATH_MAX + 64];
};

static int jail_args(const struct oci_vm *vm, const struct oci_spec *spec,
                     const struct oci_guest *g, const struct oci_template *restore_of,
                     struct jail_argv *j, const char **argv)
{
    bool writable = !spec->rootfs_readonly;
    int n = 0;

    snprintf(j->uid, sizeof(j->uid), "%u", g->jail_uid);
    snprintf(j->gid, sizeof(j->gid), "%u", g->jail_gid);
    snprintf(j->rootfs, sizeof(j->rootfs), "%s:/rootfs", spec->rootfs);
    argv[n++] = g->jailer;
    argv[n++] = "--id", argv[n++] = OCI_JAIL_NAME;
    argv[n++] = "--exec-file", argv[n++] = g->vmm;
    argv[n++] = "--uid", argv[n++] = j->uid;
    argv[n++] = "--gid", argv[n++] = j->gid;
    argv[n++] = "--chroot-base-dir", argv[n++] = vm->dir;
    argv[n++] = "--new-pid-ns";
    argv[n++] = "--mount-proc";
    if (restore_of) {
        snprintf(j->state, sizeof(j->state), "%s:" OCI_JAIL_TEMPLATE_STATE, restore_of->state);
        snprintf(j->mem, sizeof(j->mem), "%s:" OCI_JAIL_TEMPLATE_MEM, restore_of->mem);
        argv[n++] = "--ro-file", argv[n++] = j->state;
        argv[n++] = "--ro-file", argv[n++] = j->mem;
    } else {
        snprintf(j->kernel, sizeof(j->kernel), "%s:/vmlinux", g->kernel);
        snprintf(j->initrd, sizeof(j->initrd), "%s:/initrd", g->initramfs);
        argv[n++] = "--ro-file", argv[n++] = j->kernel;
        argv[n++] = "--ro-file", argv[n++] = j->initrd;
    }
    argv[n++] = spec->rootfs_readonly ? "--ro-file" : "--file", argv[n++] = j->rootfs;
    for (unsigned i = 0; i < spec->n_binds; i++) {
        if (!spec->binds[i].is_dir)
            continue;
        snprintf(j->binds[i], sizeof(j->binds[i]), "%s:/bind%u", spec->binds[i].source, i);
        argv[n++] = spec->binds[i].readonly ? "--ro-file" : "--file", argv[n++] = j->binds[i];
        writable |= !spec->binds[i].readonly;
    }
    argv[n++] = "--keep-caps";
    argv[n++] = writable ? OCI_JAIL_CAPS_RW : OCI_JAIL_CAPS_RO;
    argv[n++] = "--";
    return n;
}

/* The in-process jail, once its VMM has ended (or was never started): its tree removed. */
static void jail_end(struct oci_vm *vm)
{
    jail_run_free(vm->jail, true);
    vm->jail = NULL;
}

/* wisp-vmm in the container's cgroups and state directory, ending with the monitor; jailed
 * (argv then wisp-jailer's command line), in its jail, made in-process unless oci.json names a
 * jailer to run. */
static int spawn(struct oci_vm *vm, const struct oci_container *c, const struct oci_guest *g,
                 const char *const *argv, struct wisp_err *err)
{
    bool in_process = g->jail && !g->jailer_exec;
    int argc = 0, r;
    while (argv[argc])
        argc++;
    /* argv is wisp-jailer's command line: parsed and checked as wisp-jailer does it, and the
     * jail's tree built here (wispd does the same: docs/wispd.md, "The jail") */
    if (in_process && !(vm->jail = jail_run_prepare(argc, (char **)argv, err)))
        return wisp_err_wrap(err, "the VMM's jail");
    int logfd = openat(c->dirfd, "vmm.log", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    /* jailed in-process: a fork-like clone into the jail's namespaces (this process has one
     * thread now: the signal forwarder starts later) */
    vm->pid = in_process ? jail_clone() : fork();
    if (vm->pid < 0) {
        r = wisp_err_sys(err, errno, in_process ? "clone (the jail's namespaces)" : "fork");
        if (logfd >= 0)
            close(logfd);
        jail_end(vm);
        return r;
    }
    if (vm->pid == 0) {
        struct wisp_err cerr;
        sigset_t none;
        int null = open("/dev/null", O_RDWR);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* the VM never outlives its monitor */
        /* "0": the writer itself, whatever its pid namespace */
        if (vm->cgroups_path && oci_cgroup_enter(vm->cgroups_path, 0, &cerr) < 0) {
            dprintf(logfd, "wisp-oci: %s\n", cerr.msg);
            _exit(1);
        }
        if (fchdir(c->dirfd) < 0)
            _exit(1);
        dup2(null, 0);
        dup2(logfd >= 0 ? logfd : null, 1);
        dup2(logfd >= 0 ? logfd : null, 2);
        if (in_process) { /* wisp-jailer's child's steps, then wisp-vmm */
            jail_fail("wisp-oci", jail_run_exec(vm->jail, 3));
            _exit(127);
        }
        execv(argv[0], (char *const *)argv);
        dprintf(2, "wisp-oci: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (logfd >= 0)
        close(logfd);
    return 0;
}

/* A template applies to a VM without a NIC and without shares beside the root (the template's
 * machine has exactly one share, `rootfs`, and no NIC: docs/oci.md "Templates"). */
static bool template_fits(const struct oci_vm *vm, const struct oci_spec *spec,
                          const struct oci_guest *g)
{
    if (!g->template_on || vm->netif)
        return false;
    for (unsigned i = 0; i < spec->n_binds; i++)
        if (spec->binds[i].is_dir)
            return false;
    return true;
}

static bool wait_exit(pid_t pid, int ms);

static void end_vmm(struct oci_vm *vm, const struct oci_container *c)
{
    /* SIGTERM first: a jailer forwards it and removes the jail (the next one makes it anew) */
    if (vm->pid > 0 && (kill(vm->pid, SIGTERM) < 0 || !wait_exit(vm->pid, 3000))) {
        kill(vm->pid, SIGKILL);
        waitpid(vm->pid, NULL, 0);
        if (vm->jail_root[0] && !vm->jail) { /* what the killed jailer left: <exec-name>/ */
            char top[300];
            snprintf(top, sizeof(top), "%.*s", (int)strcspn(vm->jail_root, "/"), vm->jail_root);
            oci_container_remove_subdir(c, top);
        }
    }
    vm->pid = -1;
    jail_end(vm); /* in-process: the jail this process made */
}

/* wisp-vmm restoring the template, with the container's root and vsock socket (jailed: the
 * snapshot and the root bound into the jail, named as the jail sees them). */
static int restore(struct oci_vm *vm, const struct oci_container *c, const struct oci_spec *spec,
                   const struct oci_template *t, struct wisp_err *err)
{
    const char *argv[48];
    struct jail_argv jail;
    bool jailed = t->g->jail;
    char api[PATH_MAX + 16];
    int n = jailed ? jail_args(vm, spec, t->g, t, &jail, argv) : 0, r;
    json_t *body;
    char *text;

    if (!jailed)
        argv[n++] = t->g->vmm;
    argv[n++] = "--serial", argv[n++] = "file:console.log";
    argv[n++] = "--api-sock", argv[n++] = "api.sock";
    argv[n] = NULL;
    if ((r = spawn(vm, c, t->g, argv, err)) < 0)
        return r;
    vm_file(vm, c, "api.sock", api, sizeof(api));
    for (int i = 0; access(api, F_OK) < 0; i++) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        if (!oci_vm_running(vm) || i == 2500)
            return oci_vm_explain(vm, -EIO, err, "wisp-vmm made no API socket");
        nanosleep(&ts, NULL);
    }
    body = json_pack("{s:s,s:{s:s,s:s},s:b,s:{s:s},s:[{s:s,s:s,s:b}]}", "snapshot_path",
                     jailed ? OCI_JAIL_TEMPLATE_STATE : t->state, "mem_backend", "backend_type",
                     "File", "backend_path", jailed ? OCI_JAIL_TEMPLATE_MEM : t->mem, "resume_vm",
                     1, "vsock_override", "uds_path", "vsock.sock", "fs_overrides", "tag", "rootfs",
                     "path_on_host", jailed ? "/rootfs" : spec->rootfs, "read_only",
                     spec->rootfs_readonly);
    text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return wisp_err_set(err, ENOMEM, "out of memory");
    r = oci_vmm_api(api, "PUT", "/snapshot/load", text, 60, err);
    free(text);
    return r;
}

int oci_vm_start(struct oci_vm *vm, const struct oci_container *c, const struct oci_spec *spec,
                 const struct oci_guest *g, struct wisp_err *err)
{
    char mem[16], cpus[16], vsock[64], fs[PATH_MAX + 64], net[64], cmdline[2048], api[PATH_MAX];
    char binds[OCI_MAX_BINDS][PATH_MAX + 64];
    struct jail_argv jail;
    const char *argv[64 + 4 * OCI_MAX_BINDS];
    int n = 0, r;
    json_t *res = json_object_get(json_object_get(spec->config, "linux"), "resources");
    json_t *cpu = json_object_get(res, "cpu");

    size_vm(vm, spec, g);
    if (spec->cgroups_path) {
        uint64_t limit =
            spec->memory_limit ? ((uint64_t)vm->mem_mib + OCI_VMM_OVERHEAD_MIB) << 20 : 0;
        r = oci_cgroup_setup(spec->cgroups_path, limit,
                             json_integer_value(json_object_get(cpu, "quota")),
                             (unsigned long long)json_integer_value(json_object_get(cpu, "period")),
                             spec->cpuset, err);
        if (r < 0)
            return r;
        vm->cgroups_path = spec->cgroups_path;
    }
    snprintf(mem, sizeof(mem), "%u", vm->mem_mib);
    snprintf(cpus, sizeof(cpus), "%u", vm->vcpus);
    oci_vm_cmdline(g, cmdline, sizeof(cmdline));
    if (template_fits(vm, spec, g)) {
        struct oci_template *t = &vm->tmpl;
        struct wisp_err terr = {0};
        /* a template that does not load is discarded: then this VM boots and becomes it */
        r = oci_template_identity(t, g, vm->mem_mib, vm->vcpus, cmdline, &terr);
        for (int attempt = 0; r == 0 && attempt < 2; attempt++) {
            if ((r = oci_template_lookup(t, &terr)) <= 0) {
                vm->template_pending = r == 0;
                break;
            }
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            if ((r = restore(vm, c, spec, t, &terr)) == 0) {
                clock_gettime(CLOCK_MONOTONIC, &t1);
                vm->restore_us =
                    (t1.tv_sec - t0.tv_sec) * 1000000ll + (t1.tv_nsec - t0.tv_nsec) / 1000;
                vm->restored = true;
                oci_debug("container %s: wisp-vmm pid %d restored template %s", c->id, (int)vm->pid,
                          t->dir);
                return 0;
            }
            end_vmm(vm, c);
            vm_file(vm, c, "api.sock", api, sizeof(api)); /* the next wisp-vmm makes them anew */
            unlink(api);
            vm_file(vm, c, "vsock.sock", api, sizeof(api));
            unlink(api);
            oci_logf("warning", "container %s: the template did not load: %s", c->id, terr.msg);
            oci_template_discard(t);
            r = 0;
        }
        if (r < 0)
            oci_logf("warning", "container %s: no template (%s): a cold boot", c->id, terr.msg);
    }
    snprintf(vsock, sizeof(vsock), "cid=3,uds=vsock.sock");
    snprintf(fs, sizeof(fs), "tag=rootfs,path=%s%s", g->jail ? "/rootfs" : spec->rootfs,
             spec->rootfs_readonly ? ",ro" : "");
    if (g->jail)
        n = jail_args(vm, spec, g, NULL, &jail, argv);
    else
        argv[n++] = g->vmm;
    argv[n++] = "--kernel", argv[n++] = g->jail ? "/vmlinux" : g->kernel;
    argv[n++] = "--initrd", argv[n++] = g->jail ? "/initrd" : g->initramfs;
    argv[n++] = "--cmdline", argv[n++] = cmdline;
    argv[n++] = "--mem", argv[n++] = mem;
    argv[n++] = "--cpus", argv[n++] = cpus;
    argv[n++] = "--serial", argv[n++] = "file:console.log";
    argv[n++] = "--vsock", argv[n++] = vsock;
    argv[n++] = "--fs", argv[n++] = fs;
    for (unsigned i = 0; i < spec->n_binds; i++) {
        if (!spec->binds[i].is_dir)
            continue;
        if (g->jail)
            snprintf(binds[i], sizeof(binds[i]), "tag=bind%u,path=/bind%u%s", i, i,
                     spec->binds[i].readonly ? ",ro" : "");
        else
            snprintf(binds[i], sizeof(binds[i]), "tag=bind%u,path=%s%s", i, spec->binds[i].source,
                     spec->binds[i].readonly ? ",ro" : "");
        argv[n++] = "--fs", argv[n++] = binds[i];
    }
    if (vm->netif) {
        snprintf(net, sizeof(net), "tap=%s,mac=%s", vm->netif->tap, vm->netif->mac);
        argv[n++] = "--net", argv[n++] = net;
    }
    argv[n++] = "--api-sock", argv[n++] = "api.sock";
    argv[n] = NULL;
    if ((r = spawn(vm, c, g, argv, err)) < 0)
        return r;
    oci_debug("container %s: %s pid %d, %s MiB, %s vCPUs", c->id,
              !g->jail         ? "wisp-vmm"
              : g->jailer_exec ? "wisp-jailer"
                               : "jailed wisp-vmm",
              (int)vm->pid, mem, cpus);
    return 0;
}

void oci_vm_template_commit(struct oci_vm *vm, const struct oci_container *c)
{
    char api[PATH_MAX];
    struct wisp_err err = {0};

    if (!vm->template_pending)
        return;
    vm->template_pending = false;
    char root[PATH_MAX + 320];
    vm_file(vm, c, "api.sock", api, sizeof(api));
    snprintf(root, sizeof(root), "%s/%s", vm->dir, vm->jail_root);
    if (oci_template_commit(&vm->tmpl, api, vm->jail_root[0] ? root : NULL, &err) < 0)
        oci_logf("warning", "container %s: %s", c->id, err.msg);
}

bool oci_vm_running(struct oci_vm *vm)
{
    int st;

    if (vm->pid <= 0)
        return false;
    if (waitpid(vm->pid, &st, WNOHANG) == vm->pid) {
        vm->pid = -vm->pid; /* ended: -pid keeps it for the message */
        vm->status = st;
        return false;
    }
    return true;
}

static bool wait_exit(pid_t pid, int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid || (w < 0 && errno == ECHILD))
            return true;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return false;
}

void oci_vm_stop(struct oci_vm *vm, struct wisp_agent *agent)
{
    struct wisp_err err;

    if (agent && vm->pid > 0 && waitpid(vm->pid, NULL, WNOHANG) == 0)
        wisp_agent_shutdown(agent, 1000, wisp_agent_deadline(3000), &err);
    if (agent)
        wisp_agent_close(agent);
    if (vm->pid > 0 && !wait_exit(vm->pid, 3000)) {
        kill(vm->pid, SIGTERM); /* wisp-vmm ends within 1 s of SIGTERM */
        if (!wait_exit(vm->pid, 1500)) {
            kill(vm->pid, SIGKILL);
            waitpid(vm->pid, NULL, 0);
        }
    }
    vm->pid = -1;
    jail_end(vm); /* in-process: the jail this process made, now that its VMM has ended */
    if (vm->template_pending)
        oci_template_abandon(&vm->tmpl);
    vm->template_pending = false;
    if (vm->netif)
        oci_net_unplumb(vm->netif);
    if (vm->cgroups_path)
        oci_cgroup_remove(vm->cgroups_path);
}

int oci_vm_explain(struct oci_vm *vm, int r, struct wisp_err *err, const char *what)
{
    char path[PATH_MAX + 16], line[512] = "", buf[512];
    int st;
    FILE *f;

    if (oci_vm_running(vm) || vm->pid == -1)
        return wisp_err_wrap(err, "%s", what);
    st = vm->status;
    snprintf(path, sizeof(path), "%s/vmm.log", vm->dir);
    f = fopen(path, "re");
    while (f && fgets(buf, sizeof(buf), f))
        if (buf[0] != '\n')
            snprintf(line, sizeof(line), "%s", buf);
    if (f)
        fclose(f);
    line[strcspn(line, "\n")] = 0;
    return wisp_err_set(err, r < 0 ? -r : EIO, "%s: the VM ended (wisp-vmm status %d): %s", what,
                        WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st),
                        line[0] ? line : "no message");
}
