/* Loading the per-thread seccomp filters (seccomp.h, docs/security.md). */
#include "vmm/seccomp.h"

#include <errno.h>
#include <pthread.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "common/thread_kind.h"
#include "vmm/seccomp_progs.h"

/* Set in vmm_seccomp_setup() before any other thread exists, read-only afterwards. */
static struct {
    enum vmm_seccomp_mode mode;
    struct sock_fprog progs[SECCOMP_KINDS]; /* under log: copies whose kill is a trap */
    int test_kind;                          /* WISP_SECCOMP_TEST's kind, or -1 */
    pid_t pid;                              /* wisp-vmm's; the teardown helper has another */
} sc = {.test_kind = -1};

/* The kind of the calling thread, for the SIGSYS handler (the teardown helper shares the main
 * thread's TLS, so the handler tells it by its pid). */
static __thread int thread_kind = SECCOMP_MAIN;

static size_t cat(char *buf, size_t at, size_t cap, const char *s)
{
    while (*s && at + 1 < cap)
        buf[at++] = *s++;
    return at;
}

static size_t cat_uint(char *buf, size_t at, size_t cap, unsigned long v)
{
    char digits[24];
    size_t n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < sizeof(digits));
    while (n && at + 1 < cap)
        buf[at++] = digits[--n];
    return at;
}

/* --seccomp=log: one line, then the process ends (async-signal-safe: raw syscalls only). */
static void sigsys_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)uc;
    int kind = (pid_t)syscall(SYS_getpid) != sc.pid ? SECCOMP_TEARDOWN : thread_kind;
    unsigned nr = (unsigned)si->si_syscall;
    const char *name = nr < SECCOMP_SYSCALL_NAMES ? seccomp_syscall_names[nr] : NULL;
    char line[160];
    size_t n = cat(line, 0, sizeof(line), "wisp-vmm: seccomp: the ");
    n = cat(line, n, sizeof(line), seccomp_kind_names[kind]);
    n = cat(line, n, sizeof(line), " thread made a forbidden system call: ");
    n = cat(line, n, sizeof(line), name ? name : "?");
    n = cat(line, n, sizeof(line), " (");
    n = cat_uint(line, n, sizeof(line), nr);
    n = cat(line, n, sizeof(line), ")\n");
    syscall(SYS_write, 2, line, n);
    syscall(SYS_exit_group, VMM_SECCOMP_LOG_STATUS);
}

/* Test-only (docs/security.md): the thread of the kind named by WISP_SECCOMP_TEST makes a call
 * its filter forbids, right after loading it. Harmless when not filtered: the path is absent. */
static void test_trigger(int kind)
{
    if (kind != sc.test_kind)
        return;
    if (kind == SECCOMP_VCPU)
        syscall(SYS_socket, AF_INET, SOCK_STREAM, 0); /* no new sockets from a vCPU */
    char *argv[] = {NULL};
    syscall(SYS_execve, "/nonexistent/wisp-seccomp-test", argv, argv);
}

static int kind_of(enum wisp_thread_kind kind, const char *name)
{
    switch (kind) {
    case WISP_THREAD_MAIN:
        return SECCOMP_MAIN;
    case WISP_THREAD_VCPU:
        return SECCOMP_VCPU;
    case WISP_THREAD_IO: /* virtio-blk names its thread blk-ID, pmem pmem-ID, virtio-9p 9p-ID;
                            net and vsock theirs */
        if (name && !strncmp(name, "pmem-", 5))
            return SECCOMP_PMEM_IO;
        if (name && !strncmp(name, "9p-", 3))
            return SECCOMP_P9_IO;
        return name && !strncmp(name, "blk-", 4) ? SECCOMP_BLOCK_IO : SECCOMP_NET_IO;
    case WISP_THREAD_POOL:
        return SECCOMP_POOL;
    case WISP_THREAD_WRITER:
        return SECCOMP_WRITER;
    case WISP_THREAD_SNAPSHOT:
        return SECCOMP_SNAPSHOT;
    case WISP_THREAD_SPAWNER:
        return SECCOMP_SPAWNER;
    default:
        return SECCOMP_TEARDOWN;
    }
}

/* The hook each thread runs at its start: its own filter on top of the inherited main one.
 * Raw syscalls only (the teardown helper runs it, without a TLS of its own). A filter that
 * cannot be loaded ends the process: a thread must not run unfiltered. */
static void thread_enter(enum wisp_thread_kind tk, const char *name)
{
    int kind = kind_of(tk, name);
    if (kind != SECCOMP_TEARDOWN)
        thread_kind = kind;
    if (sc.mode == VMM_SECCOMP_LOG && kind != SECCOMP_TEARDOWN) {
        sigset_t sys; /* a blocked SIGSYS would kill silently instead */
        sigemptyset(&sys);
        sigaddset(&sys, SIGSYS);
        pthread_sigmask(SIG_UNBLOCK, &sys, NULL);
    }
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &sc.progs[kind]) != 0) {
        static const char msg[] = "wisp-vmm: seccomp: cannot load a thread's filter\n";
        syscall(SYS_write, 2, msg, sizeof(msg) - 1);
        syscall(SYS_exit_group, 1);
    }
    test_trigger(kind);
}

/* Under log, each program's kill-process returns become traps (SIGSYS to the handler); under
 * audit, SECCOMP_RET_LOG (the call is made). */
static int make_copies(uint32_t action, struct wisp_err *err)
{
    for (int k = 0; k < SECCOMP_KINDS; k++) {
        const struct sock_fprog *p = &seccomp_progs[k];
        struct sock_filter *f = malloc(p->len * sizeof(*f));
        if (!f)
            return wisp_err_set(err, ENOMEM, "seccomp: out of memory");
        memcpy(f, p->filter, p->len * sizeof(*f));
        for (unsigned i = 0; i < p->len; i++)
            if (f[i].code == (BPF_RET | BPF_K) && f[i].k == SECCOMP_RET_KILL_PROCESS)
                f[i].k = action;
        sc.progs[k] = (struct sock_fprog){p->len, f}; /* kept for the process's life */
    }
    struct sigaction sa = {.sa_sigaction = sigsys_handler, .sa_flags = SA_SIGINFO};
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSYS, &sa, NULL) < 0)
        return wisp_err_sys(err, errno, "seccomp: SIGSYS handler");
    return 0;
}

static int test_kind_from_env(struct wisp_err *err)
{
    const char *v = getenv("WISP_SECCOMP_TEST");
    if (!v || !*v)
        return 0;
    for (int k = 0; k < SECCOMP_KINDS; k++)
        if (!strcmp(v, seccomp_kind_names[k])) {
            sc.test_kind = k;
            return 0;
        }
    return wisp_err_set(err, EINVAL, "WISP_SECCOMP_TEST=%s: not a kind of thread", v);
}

/* The spawner: the one thread that may clone (threads, the --async-teardown helper). Every
 * other thread asks it (wisp_thread_spawn) and waits; one call at a time. Its filter is the
 * union of its children's lists (they inherit it), so no other thread's list needs clone or
 * any of its children's calls. */
static struct {
    pthread_mutex_t call, lock;
    pthread_cond_t cond;
    int (*fn)(void *);
    void *arg;
    int result;
    enum { SPAWN_IDLE, SPAWN_ASKED, SPAWN_DONE } state;
} sp = {.call = PTHREAD_MUTEX_INITIALIZER,
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .cond = PTHREAD_COND_INITIALIZER};

static void *spawner_main(void *unused)
{
    (void)unused;
    pthread_setname_np(pthread_self(), "spawner");
    wisp_thread_enter(WISP_THREAD_SPAWNER, "spawner");
    pthread_mutex_lock(&sp.lock);
    for (;;) {
        while (sp.state != SPAWN_ASKED)
            pthread_cond_wait(&sp.cond, &sp.lock);
        sp.result = sp.fn(sp.arg);
        sp.state = SPAWN_DONE;
        pthread_cond_broadcast(&sp.cond);
    }
    return NULL;
}

static int spawn_call(int (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&sp.call);
    pthread_mutex_lock(&sp.lock);
    sp.fn = fn, sp.arg = arg, sp.state = SPAWN_ASKED;
    pthread_cond_broadcast(&sp.cond);
    while (sp.state != SPAWN_DONE)
        pthread_cond_wait(&sp.cond, &sp.lock);
    int r = sp.result;
    sp.state = SPAWN_IDLE;
    pthread_mutex_unlock(&sp.lock);
    pthread_mutex_unlock(&sp.call);
    return r;
}

static int start_spawner(struct wisp_err *err)
{
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 << 10);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigset_t all, old; /* it takes no signal (but SIGSYS under log: thread_enter) */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int e = pthread_create(&t, &attr, spawner_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (e)
        return wisp_err_sys(err, e, "seccomp: cannot start the spawner thread");
    wisp_thread_set_spawner(spawn_call);
    return 0;
}

int vmm_seccomp_setup(enum vmm_seccomp_mode mode, struct wisp_err *err)
{
    sc.mode = mode;
    if (mode == VMM_SECCOMP_OFF)
        return 0;
    sc.pid = getpid();
    int r = test_kind_from_env(err);
    if (r < 0)
        return r;
    if (mode == VMM_SECCOMP_LOG || mode == VMM_SECCOMP_AUDIT)
        r = make_copies(mode == VMM_SECCOMP_LOG ? SECCOMP_RET_TRAP : SECCOMP_RET_LOG, err);
    else
        memcpy(sc.progs, seccomp_progs, sizeof(sc.progs));
    if (r < 0)
        return r;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return wisp_err_sys(err, errno, "seccomp: PR_SET_NO_NEW_PRIVS");
    wisp_thread_set_enter_hook(thread_enter);
    r = start_spawner(err);
    if (r < 0)
        return r;
    /* the log's writer starts now (through the spawner), not at the first line, which may be a
     * vCPU's (a boot marker) */
    wisp_log_raw("", 0);
    wisp_thread_enter(WISP_THREAD_MAIN, NULL);
    return 0;
}
