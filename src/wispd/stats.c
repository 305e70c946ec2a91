/* GET /v1/vms/{name}/stats (docs/wispd.md, "Stats"): CPU and memory from the VM's own cgroup
 * when it has one (v1 cpuacct and memory, or v2), else from /proc/PID; block and net I/O (and
 * the VMM's resident memory) from wisp-vmm's counters, GET /wisp/metrics on its API socket,
 * asked without waiting on the loop. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/http.h"
#include "reclaim.h"
#include "registry.h"
#include "vmmclient.h"
#include "wispd.h"

#define STATS_TIMEOUT_MS 2000

/* The cgroup of pid for a v1 controller ("cpuacct", "memory"), or v2 with controller "". */
static bool cgroup_of(const char *pid, const char *controller, char *out, size_t size)
{
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%s/cgroup", pid);
    FILE *f = fopen(path, "re");
    bool found = false;
    while (f && !found && fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        const char *ctrls = c1 + 1;
        bool match = !*controller ? !*ctrls && !strcmp(line, "0") : false;
        for (char *save = NULL, *t = *controller ? strtok_r((char *)ctrls, ",", &save) : NULL;
             t && !match; t = strtok_r(NULL, ",", &save))
            match = !strcmp(t, controller);
        if (match) {
            snprintf(out, size, "%s", c2 + 1);
            found = true;
        }
    }
    if (f)
        fclose(f);
    return found;
}

/* The VM's cgroup directory for a controller when it is not wispd's own (a cgroup of its
 * own, as placement gives each VM); false otherwise. */
static bool own_cgroup(int pid, const char *controller, const char *const *mounts, char *dir,
                       size_t size)
{
    char p[32], vm_cg[400], my_cg[400];
    snprintf(p, sizeof(p), "%d", pid);
    if (!cgroup_of(p, controller, vm_cg, sizeof(vm_cg)) ||
        !cgroup_of("self", controller, my_cg, sizeof(my_cg)) || !strcmp(vm_cg, my_cg))
        return false;
    for (unsigned i = 0; mounts[i]; i++) {
        snprintf(dir, size, "/sys/fs/cgroup/%s%s", mounts[i], vm_cg);
        if (access(dir, F_OK) == 0)
            return true;
    }
    return false;
}

static bool read_u64(const char *dir, const char *file, const char *key, uint64_t *out)
{
    char path[512], line[256];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    FILE *f = fopen(path, "re");
    bool ok = false;
    size_t klen = key ? strlen(key) : 0;
    while (f && !ok && fgets(line, sizeof(line), f)) {
        unsigned long long v;
        if (!key && sscanf(line, "%llu", &v) == 1)
            ok = true;
        else if (key && !strncmp(line, key, klen) && (line[klen] == ' ' || line[klen] == '\t') &&
                 sscanf(line + klen + 1, "%llu", &v) == 1)
            ok = true;
        if (ok)
            *out = v;
    }
    if (f)
        fclose(f);
    return ok;
}

static json_t *cpu_stats(int pid)
{
    static const char *const v1[] = {"cpuacct", "cpu,cpuacct", "cpuacct,cpu", NULL};
    static const char *const v2[] = {"unified", "", NULL};
    char dir[512];
    uint64_t v;
    if (own_cgroup(pid, "cpuacct", v1, dir, sizeof(dir)) &&
        read_u64(dir, "cpuacct.usage", NULL, &v))
        return json_pack("{s:I, s:s}", "usage_ns", (json_int_t)v, "source", dir);
    if (own_cgroup(pid, "", v2, dir, sizeof(dir)) && read_u64(dir, "cpu.stat", "usage_usec", &v))
        return json_pack("{s:I, s:s}", "usage_ns", (json_int_t)(v * 1000), "source", dir);
    /* /proc/PID/stat fields 14 and 15: user and system time of all its threads, in ticks */
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    unsigned long long ut = 0, st = 0;
    if (n > 0) {
        buf[n] = '\0';
        char *p = strrchr(buf, ')');
        if (!p ||
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
            ut = st = 0;
    }
    long hz = sysconf(_SC_CLK_TCK);
    uint64_t tick_ns = hz > 0 ? 1000000000ull / (uint64_t)hz : 10000000ull;
    return json_pack("{s:I, s:I, s:I, s:s}", "usage_ns", (json_int_t)((ut + st) * tick_ns),
                     "user_ns", (json_int_t)(ut * tick_ns), "system_ns", (json_int_t)(st * tick_ns),
                     "source", path);
}

static json_t *memory_stats(int pid)
{
    static const char *const v1[] = {"memory", NULL};
    static const char *const v2[] = {"unified", "", NULL};
    char dir[512];
    uint64_t v, lim;
    if (own_cgroup(pid, "memory", v1, dir, sizeof(dir)) &&
        read_u64(dir, "memory.usage_in_bytes", NULL, &v)) {
        json_t *j = json_pack("{s:I, s:s}", "bytes", (json_int_t)v, "source", dir);
        if (read_u64(dir, "memory.limit_in_bytes", NULL, &lim) && lim < (1ull << 62))
            json_object_set_new(j, "limit_bytes", json_integer((json_int_t)lim));
        return j;
    }
    if (own_cgroup(pid, "", v2, dir, sizeof(dir)) && read_u64(dir, "memory.current", NULL, &v)) {
        json_t *j = json_pack("{s:I, s:s}", "bytes", (json_int_t)v, "source", dir);
        if (read_u64(dir, "memory.max", NULL, &lim))
            json_object_set_new(j, "limit_bytes", json_integer((json_int_t)lim));
        return j;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", pid);
    if (!read_u64(path, "status", "VmRSS:", &v)) /* "VmRSS:   1234 kB" */
        v = 0;
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    return json_pack("{s:I, s:s}", "bytes", (json_int_t)(v * 1024), "source", path);
}

struct stats_req {
    struct wispd *d;
    struct api_request *req;
    int64_t id;
    char name[72];
    char *answer;
};

static json_int_t member(json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

static void stats_done(void *opaque, int status, const char *message)
{
    struct stats_req *s = opaque;
    struct vm *vm = wispd_find(s->d, s->name);
    if (!vm || vm->id != s->id || vm->pid <= 0) {
        api_reply_error(s->req, 409, "%s: the VM ended meanwhile", s->name);
    } else {
        json_t *vmm = status == 0 && s->answer ? json_loads(s->answer, 0, NULL) : NULL;
        json_t *b = json_object_get(vmm, "block"), *n = json_object_get(vmm, "net");
        json_t *j = json_pack(
            "{s:s, s:s, s:i, s:I, s:o, s:o, s:{s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, "
            "s:I, s:I, s:I}}",
            "name", vm->name, "state", vm_state_name(vm->state), "pid", vm->pid, "time_ms",
            (json_int_t)registry_now_ms(), "cpu", cpu_stats(vm->pid), "memory",
            memory_stats(vm->pid), "block", "read_bytes", member(b, "read_bytes"), "write_bytes",
            member(b, "write_bytes"), "read_count", member(b, "read_count"), "write_count",
            member(b, "write_count"), "flush_count", member(b, "flush_count"), "net", "rx_bytes",
            member(n, "rx_bytes_count"), "tx_bytes", member(n, "tx_bytes_count"), "rx_packets",
            member(n, "rx_packets_count"), "tx_packets", member(n, "tx_packets_count"),
            "rx_dropped", member(n, "rx_dropped"), "tx_dropped", member(n, "tx_dropped"));
        json_t *balloon = reclaim_vm_json(vm); /* the automatic balloon's view */
        if (balloon)
            json_object_set_new(j, "balloon", balloon);
        if (vmm)
            json_object_set_new(j, "vmm", vmm);
        else
            json_object_set_new(j, "vmm_error", json_string(message));
        api_reply_json(s->req, 200, j);
    }
    free(s->answer);
    free(s);
}

void stats_h_get(struct api_request *req, void *opaque)
{
    struct wispd *d = opaque;
    struct vm *vm = wispd_live_vm_or_reply(d, req, "stats are of a running VM");
    if (!vm)
        return;
    struct stats_req *s = calloc(1, sizeof(*s));
    struct vmm_client *c;
    struct vmm_request r = {"GET", strdup("/wisp/metrics"), NULL};
    struct wisp_err err = {0};
    if (!s) {
        free(r.path);
        api_reply_error(req, 500, "out of memory");
        return;
    }
    *s = (struct stats_req){.d = d, .req = req, .id = vm->id};
    snprintf(s->name, sizeof(s->name), "%s", vm->name);
    if (vmm_client_run(&c, d->loop, vm->api_sock, &r, 1, 0, STATS_TIMEOUT_MS, stats_done, s, &err) <
        0) {
        free(s);
        api_reply_error(req, 500, "%s", err.msg);
        return;
    }
    vmm_client_keep_answer(c, &s->answer);
    api_request_suspend(req);
}
