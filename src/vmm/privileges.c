/* Giving up privileges (--uid/--gid): no new privileges, no capabilities, no inherited fds, a
 * clean environment, then an unprivileged user and group (docs/security.md). */
#include "vmm/privileges.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

/* Only WISP_* variables (wisp's own, documented in --help) survive: no PATH, HOME, LD_*. */
static int clean_environment(struct wisp_err *err)
{
    size_t n = 0;
    for (char **e = environ; *e; e++)
        n++;
    char **keep = calloc(n + 1, sizeof(*keep));
    if (!keep)
        return wisp_err_set(err, ENOMEM, "out of memory");
    size_t k = 0;
    for (char **e = environ; *e; e++)
        if (!strncmp(*e, "WISP_", 5))
            keep[k++] = *e;
    clearenv();
    int r = 0;
    for (size_t i = 0; i < k && r == 0; i++)
        if (putenv(keep[i]) != 0) /* the strings stay where execve put them */
            r = wisp_err_sys(err, errno, "putenv");
    free(keep);
    return r;
}

static int cap_last(void)
{
    int last = CAP_LAST_CAP;
    while (prctl(PR_CAPBSET_READ, (unsigned long)last + 1, 0, 0, 0) >= 0)
        last++;
    return last;
}

static int capabilities_set(uint64_t caps, struct wisp_err *err)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof(data));
    for (int i = 0; i < 2; i++)
        data[i].effective = data[i].permitted = (uint32_t)(caps >> (32 * i));
    if (syscall(SYS_capset, &hdr, data) < 0)
        return wisp_err_sys(err, errno, "--uid: capset (keeping %s)",
                            caps ? "--keep-caps" : "no capability");
    if (syscall(SYS_capget, &hdr, data) < 0)
        return wisp_err_sys(err, errno, "--uid: capget");
    for (int i = 0; i < 2; i++)
        if (data[i].effective != (uint32_t)(caps >> (32 * i)) ||
            data[i].permitted != (uint32_t)(caps >> (32 * i)) || data[i].inheritable)
            return wisp_err_set(err, EPERM, "--uid: other capabilities remain after the drop");
    return 0;
}

/* The ids changed, caps kept (PR_SET_KEEPCAPS across setresuid), then exactly keep_caps; the
 * parent-death signal, which a credential change clears, re-armed. */
static int change_ids(const struct vmm_privileges *p, uint64_t caps, struct wisp_err *err)
{
    int death_sig = 0;
    if (prctl(PR_GET_PDEATHSIG, &death_sig, 0, 0, 0) < 0)
        return wisp_err_sys(err, errno, "--uid: PR_GET_PDEATHSIG");
    if (caps && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
        return wisp_err_sys(err, errno, "--keep-caps: PR_SET_KEEPCAPS");
    /* Each of glibc's set*id calls signals every thread and waits for it (~45 us per thread
     * under nested KVM: docs/benchmarks.md), so none is made that changes nothing: no
     * supplementary group (the usual root), no setgroups. */
    int groups = getgroups(0, NULL);
    if (groups < 0)
        return wisp_err_sys(err, errno, "--gid: getgroups");
    if (groups > 0 && setgroups(0, NULL) < 0)
        return wisp_err_sys(err, errno, "--gid: setgroups([])");
    if (setresgid(p->gid, p->gid, p->gid) < 0)
        return wisp_err_sys(err, errno, "--gid: setresgid(%u)", p->gid);
    if (setresuid(p->uid, p->uid, p->uid) < 0)
        return wisp_err_sys(err, errno, "--uid: setresuid(%u)", p->uid);
    if (caps && prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
        return wisp_err_sys(err, errno, "--keep-caps: PR_SET_KEEPCAPS 0");
    int r = capabilities_set(caps, err);
    if (r < 0)
        return r;
    /* the user's own files and taps must still be usable: no way back to root (checked on this
     * thread only, with the raw call: every thread made the same change) */
    if (syscall(SYS_setresuid, 0, 0, 0) == 0)
        return wisp_err_set(err, EPERM, "--uid: the process could become root again");
    if (death_sig && prctl(PR_SET_PDEATHSIG, (unsigned long)death_sig, 0, 0, 0) < 0)
        return wisp_err_sys(err, errno, "--uid: PR_SET_PDEATHSIG");
    return 0;
}

int vmm_privileges_prepare(struct vmm_privileges *p, struct wisp_err *err)
{
    if (!p->drop)
        return 0;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return wisp_err_sys(err, errno, "--uid: PR_SET_NO_NEW_PRIVS");
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return wisp_err_sys(err, errno, "--uid: clearing the ambient capabilities");
    /* the bounding set needs CAP_SETPCAP: without it (not root) there is nothing to bound */
    for (int cap = 0, last = cap_last(); cap <= last; cap++)
        if (!(cap < 64 && (p->keep_caps >> cap) & 1) &&
            prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0, 0, 0) < 0 && errno != EINVAL &&
            errno != EPERM)
            return wisp_err_sys(err, errno, "--uid: dropping capability %d from the bounding set",
                                cap);
    unsigned keep = p->keep_fd > 2 ? (unsigned)p->keep_fd : 0;
    if ((keep > 3 && syscall(SYS_close_range, 3U, keep - 1, 0U) < 0) ||
        syscall(SYS_close_range, keep ? keep + 1 : 3U, ~0U, 0U) < 0)
        return wisp_err_sys(err, errno, "--uid: closing inherited file descriptors");
    int r = clean_environment(err);
    if (r < 0 || !p->keep_caps)
        return r;
    /* one thread: what it keeps, every later thread has */
    if ((r = change_ids(p, p->keep_caps, err)) < 0)
        return r;
    p->dropped = true;
    return 0;
}

int vmm_privileges_drop(struct vmm_privileges *p, struct wisp_err *err)
{
    if (!p->drop || p->dropped)
        return 0;
    int r = change_ids(p, 0, err);
    if (r < 0)
        return r;
    p->dropped = true;
    return 0;
}
