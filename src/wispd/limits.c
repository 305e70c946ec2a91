/* Host limits that the next VM could hit, checked before each start in O(1) (docs/wispd.md,
 * "Limits"): wispd's open files, the host's threads and pids, the memory available. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "reclaim.h"
#include "wispd.h"

/* A wisp-vmm's threads beyond its vCPUs: main, logger, serial, block and net I/O threads. */
#define VMM_EXTRA_THREADS 4
/* wispd's fds per running VM: its pidfd, its timer, a connection to its API while a request
 * is under way; during a start also a pipe and the log (closed once the child runs). */
#define FDS_PER_VM   3
#define FDS_AT_START 4

static long read_long(const char *path, int field)
{
    FILE *f = fopen(path, "re");
    long v = -1;
    if (!f)
        return -1;
    for (int i = 0; i <= field; i++)
        if (fscanf(f, "%ld", &v) != 1) {
            v = -1;
            break;
        }
    fclose(f);
    return v;
}

/* Threads on the host now: /proc/loadavg's fourth field, "running/total". */
static long host_threads(void)
{
    FILE *f = fopen("/proc/loadavg", "re");
    long running, total = -1;
    if (f && fscanf(f, "%*f %*f %*f %ld/%ld", &running, &total) != 2)
        total = -1;
    if (f)
        fclose(f);
    return total;
}

static long mem_available_mib(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    char line[128];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "MemAvailable: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib < 0 ? -1 : kib / 1024;
}

int wispd_check_limits(struct wispd *d, unsigned vcpus, struct wisp_err *err)
{
    struct rlimit nofile;
    getrlimit(RLIMIT_NOFILE, &nofile);
    /* a VM in balloon auto mode: one more, its balloon's request (reclaim.c) */
    unsigned long need = (unsigned long)d->base_fds + (d->nr_live + 1ul) * FDS_PER_VM +
                         FDS_AT_START + reclaim_nr_vms(d);
    if (need > nofile.rlim_cur)
        return wisp_err_set(err, EMFILE,
                            "the next VM would pass wispd's open-file limit (RLIMIT_NOFILE %lu, "
                            "hard %lu: %u VMs running need about %lu): raise the hard limit "
                            "(LimitNOFILE= in the unit, or ulimit -Hn as root with "
                            "CAP_SYS_RESOURCE)",
                            (unsigned long)nofile.rlim_cur, (unsigned long)nofile.rlim_max,
                            d->nr_live, need);
    long threads = host_threads(), tmax = read_long("/proc/sys/kernel/threads-max", 0),
         pmax = read_long("/proc/sys/kernel/pid_max", 0);
    long more = vcpus + VMM_EXTRA_THREADS;
    if (threads >= 0 && tmax > 0 && threads + more > tmax)
        return wisp_err_set(err, EAGAIN,
                            "the next VM (%ld threads) would pass the host's thread limit "
                            "(kernel.threads-max %ld, %ld in use)",
                            more, tmax, threads);
    if (threads >= 0 && pmax > 0 && threads + more > pmax)
        return wisp_err_set(err, EAGAIN,
                            "the next VM (%ld threads) would pass kernel.pid_max (%ld, %ld in "
                            "use)",
                            more, pmax, threads);
    struct rlimit nproc;
    getrlimit(RLIMIT_NPROC, &nproc);
    /* RLIMIT_NPROC counts the user's threads; root (and CAP_SYS_RESOURCE/ADMIN) is exempt. */
    if (geteuid() != 0 && nproc.rlim_cur != RLIM_INFINITY && threads >= 0 &&
        (unsigned long)(threads + more) > nproc.rlim_cur)
        return wisp_err_set(err, EAGAIN,
                            "the next VM (%ld threads) may pass RLIMIT_NPROC (%lu): fewer than "
                            "%ld threads on the host are this user's, but wispd cannot count them "
                            "cheaply",
                            more, (unsigned long)nproc.rlim_cur, threads);
    return 0;
}

json_t *wispd_limits_json(struct wispd *d)
{
    struct rlimit nofile, nproc;
    getrlimit(RLIMIT_NOFILE, &nofile);
    getrlimit(RLIMIT_NPROC, &nproc);
    long left = (long)nofile.rlim_cur - d->base_fds - FDS_AT_START - (long)d->nr_live * FDS_PER_VM -
                (long)reclaim_nr_vms(d);
    return json_pack("{s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:b}, s:{s:I, s:I, s:I}, s:I, s:I, "
                     "s:I, s:o}",
                     "nofile", "soft", (json_int_t)nofile.rlim_cur, "hard",
                     (json_int_t)nofile.rlim_max, "per_vm", (json_int_t)FDS_PER_VM, "vms_left",
                     (json_int_t)(left > 0 ? left / FDS_PER_VM : 0), "nproc", "soft",
                     (json_int_t)(nproc.rlim_cur == RLIM_INFINITY ? -1 : (long)nproc.rlim_cur),
                     "hard",
                     (json_int_t)(nproc.rlim_max == RLIM_INFINITY ? -1 : (long)nproc.rlim_max),
                     "enforced", geteuid() != 0, "threads", "in_use", (json_int_t)host_threads(),
                     "max", (json_int_t)read_long("/proc/sys/kernel/threads-max", 0), "pid_max",
                     (json_int_t)read_long("/proc/sys/kernel/pid_max", 0), "mem_available_mib",
                     (json_int_t)mem_available_mib(), "vms", (json_int_t)d->nr_vms, "running",
                     (json_int_t)d->nr_live, "placement", placement_host_json(d));
}
