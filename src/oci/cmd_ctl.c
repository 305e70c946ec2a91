/* wisp-oci start, kill, delete, pause, resume, update, ps: the OCI state machine's transitions
 * with runc's errors (docs/oci.md, "State machine"), carried out through the guest agent or
 * wisp-vmm's API. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/client.h"
#include "common/cleanup.h"
#include "common/io.h"
#include "host.h"
#include "oci.h"
#include "state.h"
#include "vm.h"

/* The agent's answer to start, kill, ps: the guest's work for PROCESS_START (an exec: ring-0
 * code) took more than 30 s on this project's PVM machines under load (bench/oci, ten idle
 * containers beside other sessions' VMs). */
#define CTL_TIMEOUT_MS 120000

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The agent, retried while the VM may still be coming up, but only as long as its monitor
 * lives: a container whose VM is going away (its monitor ending it) is not waited for until
 * the deadline (a `kill --all ID 9` right after the container's process ended took 120 s). */
static int agent_open(struct oci_container *c, struct wisp_agent **a, struct wisp_err *err)
{
    char uds[PATH_MAX];
    int64_t end = wisp_agent_deadline(CTL_TIMEOUT_MS);
    pid_t pid;
    int r;

    oci_vsock_path(c, uds, sizeof(uds));
    do {
        int64_t step = wisp_agent_deadline(500);
        r = wisp_agent_connect(uds, step < end ? step : end, a, err);
    } while (r < 0 && wisp_agent_deadline(0) < end &&
             strcmp(oci_container_status(c, &pid), "stopped") != 0);
    return r;
}

static int one_id(const char *cmd, int argc, char **argv, const struct oci_opt *opts)
{
    int i = oci_parse_opts(cmd, argc, argv, 1, opts);

    if (i < 0)
        return -1;
    if (argc - i != 1) {
        oci_usage(cmd, "\"%s\" requires exactly 1 argument(s)", cmd);
        return -1;
    }
    return i;
}

static int set_status(struct oci_container *c, const char *status)
{
    struct wisp_err err = {0};

    json_object_set_new(c->state, "status", json_string(status));
    if (oci_container_save(c, &err) < 0)
        return oci_fail(OCI_EXIT_FAIL, "%s", err.msg);
    return 0;
}

int cmd_start(int argc, char **argv)
{
    const struct oci_opt opts[] = {{NULL, 0, false, NULL, NULL}};
    int i = one_id("start", argc, argv, opts), r;
    struct wisp_err err = {0};
    struct oci_container c;
    struct wisp_agent *a;
    const char *status;
    char st[16];
    pid_t pid;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (oci_open_or_fail(argv[i], &c))
        return OCI_EXIT_FAIL;
    snprintf(st, sizeof(st), "%s", oci_container_status(&c, &pid));
    status = st;
    if (strcmp(status, "created") != 0) {
        oci_container_close(&c);
        if (strcmp(status, "stopped") == 0)
            return oci_fail(OCI_EXIT_FAIL, "cannot start a container that has stopped");
        if (strcmp(status, "running") == 0)
            return oci_fail(OCI_EXIT_FAIL, "cannot start an already running container");
        return oci_fail(OCI_EXIT_FAIL, "cannot start a container in the %s state", status);
    }
    r = agent_open(&c, &a, &err);
    if (r == 0) {
        r = wisp_agent_process_start(a, c.id, "", wisp_agent_deadline(CTL_TIMEOUT_MS), &err);
        wisp_agent_close(a);
    }
    if (r < 0) {
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_FAIL, "cannot start container %s: %s", argv[i], err.msg);
    }
    r = set_status(&c, "running");
    oci_container_close(&c);
    return r;
}

/* SIGKILL to the monitor: its VM dies with it (PR_SET_PDEATHSIG); waits until it is gone or a
 * zombie its reaper has not collected yet. */
static void kill_monitor(struct oci_container *c)
{
    pid_t pid;

    oci_container_status(c, &pid);
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    for (int i = 0; i < 500; i++) {
        oci_container_status(c, &pid);
        if (pid <= 0)
            return;
        sleep_ms(10);
    }
}

int cmd_kill(int argc, char **argv)
{
    bool all = false;
    const struct oci_opt opts[] = {{"all", 'a', false, NULL, &all}, {NULL, 0, false, NULL, NULL}};
    int i = oci_parse_opts("kill", argc, argv, 1, opts), sig = SIGTERM, r;
    struct wisp_err err = {0};
    struct oci_container c;
    struct wisp_agent *a;
    const char *status;
    pid_t pid;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (argc - i < 1 || argc - i > 2)
        return oci_usage("kill", "\"kill\" requires a container id and at most one signal");
    if (argc - i == 2 && (sig = oci_parse_signal(argv[i + 1])) < 0)
        return oci_fail(OCI_EXIT_FAIL, "unknown signal \"%s\"", argv[i + 1]);
    if (oci_open_or_fail(argv[i], &c))
        return OCI_EXIT_FAIL;
    status = oci_container_status(&c, &pid);
    if (strcmp(status, "stopped") == 0) {
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_FAIL, "container not running");
    }
    if (strcmp(status, "paused") == 0) {
        if (sig == SIGKILL) {
            kill_monitor(&c);
            oci_container_close(&c);
            return 0;
        }
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_FAIL,
                        "container %s is paused: only SIGKILL reaches it until "
                        "it is resumed",
                        argv[i]);
    }
    r = agent_open(&c, &a, &err);
    if (r == 0) {
        r = wisp_agent_signal(a, c.id, "", sig, all, wisp_agent_deadline(CTL_TIMEOUT_MS), &err);
        wisp_agent_close(a);
    }
    if (r < 0 && sig == SIGKILL) {
        kill_monitor(&c); /* an agent that cannot be reached still ends with its VM */
        r = 0;
    }
    oci_container_close(&c);
    if (r == -ESRCH)
        return oci_fail(OCI_EXIT_FAIL, "container not running");
    if (r < 0)
        return oci_fail(OCI_EXIT_FAIL, "kill %s: %s", argv[i], err.msg);
    return 0;
}

/* What a monitor killed with SIGKILL could not remove: the tap in the engine's namespace. */
static void remove_tap(json_t *wisp)
{
    const char *netns = json_string_value(json_object_get(wisp, "netns"));
    const char *tap = json_string_value(json_object_get(wisp, "tap"));
    const char *netif = json_string_value(json_object_get(wisp, "netif"));
    pid_t child;

    if (!netns || !tap)
        return;
    child = fork();
    if (child == 0) {
        int fd = open(netns, O_RDONLY | O_CLOEXEC);
        struct oci_netif nif = {0};
        if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
            _exit(1);
        snprintf(nif.tap, sizeof(nif.tap), "%s", tap);
        snprintf(nif.name, sizeof(nif.name), "%s", netif ? netif : "");
        oci_net_unplumb(&nif);
        _exit(0);
    }
    if (child > 0)
        waitpid(child, NULL, 0);
}

static int destroy(struct oci_container *c)
{
    json_t *wisp = json_object_get(c->state, "wisp");
    const char *cg = json_string_value(json_object_get(wisp, "cgroups_path"));
    json_int_t vmm = json_integer_value(json_object_get(wisp, "vmm_pid"));
    struct wisp_err err = {0};

    kill_monitor(c);
    /* The VMM ends with its monitor; wait for it so that its cgroup can go. */
    for (int i = 0; vmm > 0 && i < 300 && kill((pid_t)vmm, 0) == 0; i++) {
        bool alive;
        oci_proc_start_time((pid_t)vmm, &alive);
        if (!alive)
            break;
        sleep_ms(10);
    }
    remove_tap(wisp);
    if (cg)
        oci_cgroup_remove(cg);
    if (oci_container_remove(c, &err) < 0)
        return oci_fail(OCI_EXIT_FAIL, "%s", err.msg);
    return 0;
}

int cmd_delete(int argc, char **argv)
{
    bool force = false;
    const struct oci_opt opts[] = {{"force", 'f', false, NULL, &force},
                                   {NULL, 0, false, NULL, NULL}};
    int i = one_id("delete", argc, argv, opts), r;
    struct wisp_err err = {0};
    struct oci_container c;
    const char *status;
    pid_t pid;

    if (i < 0)
        return OCI_EXIT_USAGE;
    r = oci_container_open(argv[i], &c, &err);
    if (r == -ENOENT) {
        /* runc: a directory without a state (an aborted create) is removed; --force makes a
         * container that does not exist a success. */
        if (c.dirfd >= 0)
            oci_container_remove(&c, &err);
        else
            oci_container_close(&c);
        return force ? 0 : oci_fail(OCI_EXIT_FAIL, "container does not exist");
    }
    if (r < 0)
        return oci_fail(OCI_EXIT_FAIL, "%s", err.msg);
    status = oci_container_status(&c, &pid);
    if (!force && (strcmp(status, "running") == 0 || strcmp(status, "paused") == 0)) {
        r = oci_fail(OCI_EXIT_FAIL, "cannot delete container %s that is not stopped: %s", argv[i],
                     status);
        oci_container_close(&c);
        return r;
    }
    return destroy(&c);
}

/* PATCH /vm on wisp-vmm's API socket (docs/api.md), answered 204. */
static int vm_patch_state(struct oci_container *c, const char *state, struct wisp_err *err)
{
    char sock[PATH_MAX], body[64];

    oci_vm_file(c, oci_vm_jail_root(c), "api.sock", sock, sizeof(sock));
    snprintf(body, sizeof(body), "{\"state\": \"%s\"}", state);
    return oci_vmm_api(sock, "PATCH", "/vm", body, 10, err);
}

static int pause_resume(int argc, char **argv, bool pause)
{
    const struct oci_opt opts[] = {{NULL, 0, false, NULL, NULL}};
    const char *cmd = pause ? "pause" : "resume";
    int i = one_id(cmd, argc, argv, opts), r;
    struct wisp_err err = {0};
    struct oci_container c;
    const char *status;
    pid_t pid;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (oci_open_or_fail(argv[i], &c))
        return OCI_EXIT_FAIL;
    status = oci_container_status(&c, &pid);
    if (strcmp(status, pause ? "running" : "paused") != 0) {
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_FAIL, pause ? "container not running" : "container not paused");
    }
    if (vm_patch_state(&c, pause ? "Paused" : "Resumed", &err) < 0) {
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_FAIL, "%s %s: %s", cmd, argv[i], err.msg);
    }
    r = set_status(&c, pause ? "paused" : "running");
    oci_container_close(&c);
    return r;
}

int cmd_pause(int argc, char **argv)
{
    return pause_resume(argc, argv, true);
}

int cmd_resume(int argc, char **argv)
{
    return pause_resume(argc, argv, false);
}

int cmd_update(int argc, char **argv)
{
    const char *resources = NULL;
    const struct oci_opt opts[] = {{"resources", 'r', true, &resources, NULL},
                                   {NULL, 0, false, NULL, NULL}};
    int i = one_id("update", argc, argv, opts), r = 0;
    struct wisp_err err = {0};
    struct oci_container c;
    const char *status, *cg;
    json_t *res, *mem, *cpu;
    pid_t pid;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (!resources)
        return oci_usage("update", "wisp-oci takes the new limits as --resources FILE (or - for "
                                   "stdin) only");
    if (oci_open_or_fail(argv[i], &c))
        return OCI_EXIT_FAIL;
    status = oci_container_status(&c, &pid);
    if (strcmp(status, "stopped") == 0) {
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_FAIL, "container not running");
    }
    res = oci_load_json_file(resources, &err);
    if (!res) {
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_FAIL, "update: --resources: %s", err.msg);
    }
    /* The guest's memory and vCPUs are fixed at its boot: the new limits bound the VM's
     * cgroups (docs/oci.md, "update"). */
    cg = json_string_value(json_object_get(json_object_get(c.state, "wisp"), "cgroups_path"));
    mem = json_object_get(res, "memory");
    cpu = json_object_get(res, "cpu");
    if (cg) {
        json_int_t limit = json_integer_value(json_object_get(mem, "limit"));
        r = oci_cgroup_setup(
            cg, limit > 0 ? (uint64_t)limit + ((uint64_t)OCI_VMM_OVERHEAD_MIB << 20) : 0,
            json_integer_value(json_object_get(cpu, "quota")),
            (unsigned long long)json_integer_value(json_object_get(cpu, "period")),
            json_string_value(json_object_get(cpu, "cpus")), &err);
    }
    if (r == 0) {
        json_object_set(json_object_get(c.state, "wisp"), "resources", res);
        r = oci_container_save(&c, &err);
    }
    json_decref(res);
    oci_container_close(&c);
    if (r < 0)
        return oci_fail(OCI_EXIT_FAIL, "update %s: %s", argv[i], err.msg);
    return 0;
}

int cmd_ps(int argc, char **argv)
{
    const char *format = "table";
    const struct oci_opt opts[] = {{"format", 'f', true, &format, NULL},
                                   {NULL, 0, false, NULL, NULL}};
    int i = oci_parse_opts("ps", argc, argv, 1, opts), r;
    struct wisp_err err = {0};
    struct oci_container c;
    struct wisp_agent *a;
    struct wisp_agent_ps_entry *e = NULL;
    const char *status;
    size_t n = 0;
    pid_t pid;

    if (i < 0)
        return OCI_EXIT_USAGE;
    if (argc - i < 1)
        return oci_usage("ps", "\"ps\" requires a container id");
    if (strcmp(format, "table") != 0 && strcmp(format, "json") != 0)
        return oci_usage("ps", "invalid format option");
    if (oci_open_or_fail(argv[i], &c))
        return OCI_EXIT_FAIL;
    status = oci_container_status(&c, &pid);
    if (strcmp(format, "json") == 0) {
        /* Host pids, as the engines match them with their processes: the container's monitor
         * and each exec's (wisp-oci exec records them). */
        json_t *pids = json_array();
        if (pid > 0)
            json_array_append_new(pids, json_integer(pid));
        int dfd = pid > 0 ? openat(c.dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
        DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
        struct dirent *de;
        while (d && (de = readdir(d))) {
            bool alive;
            if (strncmp(de->d_name, "exec.", 5) != 0)
                continue;
            oci_proc_start_time(atoi(de->d_name + 5), &alive);
            if (alive)
                json_array_append_new(pids, json_integer(atoi(de->d_name + 5)));
        }
        if (d)
            closedir(d);
        char *text = json_dumps(pids, JSON_COMPACT);
        printf("%s\n", text ? text : "[]");
        free(text);
        json_decref(pids);
        oci_container_close(&c);
        return 0;
    }
    if (strcmp(status, "stopped") == 0) {
        oci_container_close(&c);
        return oci_fail(OCI_EXIT_FAIL, "container not running");
    }
    r = agent_open(&c, &a, &err);
    if (r == 0) {
        r = wisp_agent_ps(a, c.id, &e, &n, wisp_agent_deadline(CTL_TIMEOUT_MS), &err);
        wisp_agent_close(a);
    }
    oci_container_close(&c);
    if (r < 0)
        return oci_fail(OCI_EXIT_FAIL, "ps %s: %s", argv[i], err.msg);
    printf("%-8s %-8s %-8s %-5s %s\n", "PID", "PPID", "UID", "STAT", "CMD");
    for (size_t k = 0; k < n; k++)
        printf("%-8u %-8u %-8u %-5s %s\n", e[k].pid, e[k].ppid, e[k].uid, e[k].state, e[k].cmd);
    free(e);
    return 0;
}
