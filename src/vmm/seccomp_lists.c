/* wisp-vmm's per-thread allow-lists (seccomp_lists.h, docs/security.md). */
#include "vmm/seccomp_lists.h"

#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <sys/socket.h>

#define N(a) (unsigned)(sizeof(a) / sizeof((a)[0]))
#define ANY(s, why)                                                                                \
    {                                                                                              \
        s, SC_ANY, 0, why                                                                          \
    }
#define NOEXEC(s)                                                                                  \
    {                                                                                              \
        s, SC_NOEXEC, 0, "memory: never executable"                                                \
    }
#define IOCTL(req, why)                                                                            \
    {                                                                                              \
        "ioctl", SC_IOCTL, req, why                                                                \
    }

/* What glibc itself does on any thread: locks, malloc, signals, the clock, the thread's end. */
#define THREAD_BASICS                                                                              \
    ANY("futex", "locks, condition variables"), ANY("rt_sigreturn", "a signal handler returns"),   \
        ANY("rt_sigprocmask", "pthread signal masks"),                                             \
        ANY("madvise", "malloc trims; stack freed"), ANY("munmap", "malloc, a thread's stack"),    \
        NOEXEC("mmap"), NOEXEC("mprotect"), ANY("brk", "malloc"), ANY("exit", "the thread ends"),  \
        ANY("exit_group", "the process ends"),                                                     \
        ANY("restart_syscall", "rare: an interrupted sleep"),                                      \
        ANY("clock_gettime", "rare: the vDSO's fallback"),                                         \
        ANY("gettid", "rare: glibc's abort and raise"), ANY("getpid", "rare: glibc's raise"),      \
        ANY("tgkill", "rare: glibc's raise/abort"), ANY("sched_yield", "rare: spin locks"),        \
        ANY("rseq", "rare: glibc registers it at thread start"),                                   \
        ANY("set_robust_list", "rare: glibc at thread start"),                                     \
        ANY("prctl", "pthread_setname_np on itself (PR_SET_NAME)"),                                \
        ANY("setresuid", "rare: --uid: glibc makes every thread change its ids"),                  \
        ANY("setresgid", "rare: --gid: glibc makes every thread change its ids"),                  \
        ANY("setgroups", "rare: --uid: glibc makes every thread change its groups")

/* An event loop (common/evloop.c): epoll, eventfds, posted calls, timers. */
#define EVLOOP                                                                                     \
    ANY("epoll_wait", "the loop"), ANY("epoll_pwait", "the loop"),                                 \
        ANY("epoll_ctl", "sources added and removed"), ANY("read", "eventfds, timerfds"),          \
        ANY("write", "eventfds: wake-ups, irqfds"), ANY("close", "sources closed"),                \
        ANY("timerfd_settime", "timers"), ANY("timerfd_create", "timers (rate limits)"),           \
        ANY("eventfd2", "a source's eventfd"), ANY("epoll_create1", "rare: the loop")

static const struct seccomp_rule vcpu_rules[] = {
    THREAD_BASICS,
    IOCTL(KVM_RUN, "runs the guest"),
    IOCTL(KVM_GET_REGS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_SREGS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_FPU, "rare: snapshot without XSAVE"),
    IOCTL(KVM_GET_XSAVE, "snapshot: vCPU state"),
    IOCTL(KVM_GET_XSAVE2, "snapshot: vCPU state"),
    IOCTL(KVM_GET_XCRS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_DEBUGREGS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_LAPIC, "snapshot: vCPU state"),
    IOCTL(KVM_GET_VCPU_EVENTS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_MP_STATE, "snapshot: vCPU state"),
    IOCTL(KVM_GET_MSRS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_CPUID2, "snapshot: vCPU state"),
    IOCTL(KVM_GET_TSC_KHZ, "snapshot: vCPU state"),
    IOCTL(KVM_GET_MSR_FEATURE_INDEX_LIST, "snapshot: which MSRs to save"),
    IOCTL(KVM_GET_MSR_INDEX_LIST, "snapshot: which MSRs to save"),
    IOCTL(KVM_CHECK_EXTENSION, "rare: snapshot probes XSAVE2"),
    IOCTL(KVM_IRQ_LINE, "a device register access raises or lowers an interrupt"),
    IOCTL(KVM_IRQ_LINE_STATUS, "rare: as KVM_IRQ_LINE"),
    IOCTL(KVM_SIGNAL_MSI, "rare: MSI from a register access"),
    IOCTL(KVM_IOEVENTFD, "virtio DRIVER_OK / reset: queue notify ioeventfds"),
    IOCTL(KVM_IRQFD, "virtio DRIVER_OK / reset: queue irqfds"),
    IOCTL(TUNSETOFFLOAD, "virtio-net FEATURES_OK: the tap's offloads"),
    ANY("read", "rare: eventfd of a posted call"),
    ANY("write", "wake-ups of device loops, irqfds, the stop request"),
    ANY("eventfd2", "virtio DRIVER_OK: a queue's ioeventfd and irqfd"),
    ANY("close", "virtio reset: the queue's eventfds"),
    ANY("epoll_ctl", "rare: a device's source added from a register access"),
    ANY("timerfd_settime", "rare: a device's timer armed from a register access"),
};

static const struct seccomp_rule block_io_rules[] = {
    THREAD_BASICS,
    EVLOOP,
    ANY("io_uring_enter", "the drive's ring (liburing)"),
    ANY("io_uring_setup", "the drive's ring, set up on its thread"),
    ANY("io_uring_register", "the ring's file and eventfd"),
    ANY("pread64", "data and qcow2 metadata"),
    ANY("pwrite64", "data and qcow2 metadata"),
    ANY("preadv", "data"),
    ANY("pwritev", "data"),
    ANY("preadv2", "rare: data"),
    ANY("pwritev2", "rare: data"),
    ANY("fdatasync", "flush"),
    ANY("fsync", "rare: flush"),
    ANY("fallocate", "discard, write zeroes, growing a qcow2 file"),
    ANY("ftruncate", "rare: a qcow2 file's end"),
    ANY("fstat", "rare: the image's size"),
    ANY("newfstatat", "rare: the image's size"),
    ANY("lseek", "rare: SEEK_DATA/SEEK_HOLE"),
    ANY("openat", "PATCH /drives: the new image opened here"),
    ANY("flock", "rare: the new image's lock"),
    ANY("readlink", "PATCH /drives: realpath() of the new image"),
    ANY("getcwd", "rare: realpath() of a relative path"),
    ANY("fcntl", "rare: the new image's lock and flags"),
    ANY("clone3", "starts pool workers (glibc's pthread_create)"),
    {"seccomp", SC_ARG0, SECCOMP_SET_MODE_FILTER, "a pool worker loads its own filter"},
    ANY("clone", "rare: pthread_create's fallback"),
    IOCTL(KVM_IOEVENTFD, "rare: queues attached on the device's loop"),
    IOCTL(KVM_IRQFD, "rare: queues attached on the device's loop"),
};

static const struct seccomp_rule net_io_rules[] = {
    THREAD_BASICS,
    EVLOOP,
    ANY("readv", "frames from the tap"),
    ANY("writev", "frames to the tap"),
    ANY("recvmsg", "rare: vsock's unix sockets"),
    ANY("sendmsg", "rare: vsock's unix sockets"),
    ANY("accept4", "rare: vsock's listening socket"),
    ANY("connect", "rare: vsock: a guest connects to a host port"),
    {"socket", SC_ARG0, AF_UNIX, "rare: vsock: unix sockets only"},
    ANY("shutdown", "rare: vsock"),
    IOCTL(KVM_IOEVENTFD, "rare: queues attached on the device's loop"),
    IOCTL(KVM_IRQFD, "rare: queues attached on the device's loop"),
};

static const struct seccomp_rule pool_rules[] = {
    THREAD_BASICS,
    ANY("pread64", "data"),
    ANY("pwrite64", "data"),
    ANY("preadv", "data"),
    ANY("pwritev", "data"),
    ANY("preadv2", "rare: data"),
    ANY("pwritev2", "rare: data"),
    ANY("fdatasync", "flush"),
    ANY("fsync", "rare: flush"),
    ANY("fallocate", "discard, write zeroes"),
    ANY("write", "the completion eventfd"),
    ANY("newfstatat", "an image's size (fstat)"),
    ANY("fstat", "rare: an image's size"),
};

static const struct seccomp_rule writer_rules[] = {
    THREAD_BASICS,
    ANY("write", "the output"),
    ANY("writev", "rare: the output"),
    ANY("fallocate", "rare: --console-log-max punches old console output out of its file"),
};

static const struct seccomp_rule snapshot_rules[] = {
    THREAD_BASICS,
    ANY("openat", "the temporary state and memory files, /proc/self/pagemap"),
    ANY("close", "those files"),
    ANY("ftruncate", "the memory file's size"),
    ANY("pwrite64", "state and memory"),
    ANY("pread64", "/proc/self/pagemap"),
    ANY("write", "wake-ups of device loops (quiesce, resume)"),
    ANY("read", "rare: an eventfd"),
    ANY("fdatasync", "rare: the files reach the disk"),
    ANY("fsync", "rare: the files reach the disk"),
    ANY("rename", "the files get their names"),
    ANY("renameat", "rare: the files get their names"),
    ANY("renameat2", "rare: the files get their names"),
    ANY("unlink", "a failed snapshot's temporary files"),
    ANY("unlinkat", "rare: a failed snapshot's temporary files"),
    ANY("fstat", "rare: stdio"),
    ANY("newfstatat", "rare: stdio"),
    ANY("lseek", "rare"),
    IOCTL(KVM_GET_IRQCHIP, "the in-kernel PIC and IOAPIC"),
    IOCTL(KVM_GET_PIT2, "the in-kernel PIT"),
    IOCTL(KVM_GET_CLOCK, "kvmclock"),
    IOCTL(KVM_GET_DIRTY_LOG, "diff snapshots"),
    IOCTL(KVM_CLEAR_DIRTY_LOG, "rare: diff snapshots with manual protect"),
    ANY("tgkill", "kicks the vCPUs to take their state"),
};

static const struct seccomp_rule teardown_rules[] = {
    ANY("close_range", "closes every fd but two"),
    ANY("read", "waits for wisp-vmm's end"),
    ANY("exit", "the helper's end"),
    ANY("exit_group", "rare: the helper's end"),
    {"write", SC_ARG0, 2, "rare: --seccomp=log's message, on stderr only"},
    ANY("rt_sigreturn", "rare: --seccomp=log's handler"),
    ANY("getpid", "rare: --seccomp=log's handler tells the helper from wisp-vmm"),
};

/* The main thread: set-up (KVM, files, taps, sockets), the event loop, the API, the stop
 * path; on top of what the threads it starts need (they inherit its filter). */
static const struct seccomp_rule main_rules[] = {
    THREAD_BASICS,
    EVLOOP,
    ANY("openat", "/dev/kvm, images, taps, the kernel, /dev/userfaultfd"),
    ANY("open", "rare: older glibc paths"),
    ANY("pread64", "images, the kernel, the state file"),
    ANY("readv", "rare"),
    ANY("writev", "rare: stdio"),
    ANY("lseek", "files"),
    ANY("fstat", "files"),
    ANY("newfstatat", "files"),
    ANY("statx", "rare: files"),
    ANY("readlink", "rare"),
    ANY("readlinkat", "rare"),
    ANY("access", "rare"),
    ANY("faccessat", "rare"),
    ANY("faccessat2", "rare"),
    ANY("getcwd", "rare"),
    ANY("fcntl", "flags, locks"),
    ANY("flock", "image locks"),
    ANY("dup", "rare"),
    ANY("dup2", "rare"),
    ANY("dup3", "rare"),
    ANY("pipe2", "--async-teardown's pipe"),
    ANY("signalfd4", "the loop's signals"),
    {"seccomp", SC_ARG0, SECCOMP_SET_MODE_FILTER, "each thread it starts loads its own filter"},
    ANY("epoll_create1", "event loops (the main one, each I/O thread's, libmicrohttpd's)"),
    ANY("setresuid", "rare: --uid (privileges.c)"),
    ANY("setresgid", "rare: --gid (privileges.c)"),
    ANY("setgroups", "rare: --uid/--gid (privileges.c)"),
    ANY("capset", "rare: --uid (privileges.c)"),
    ANY("capget", "rare: --uid (privileges.c)"),
    ANY("timerfd_create", "timers"),
    ANY("rt_sigaction", "handlers"),
    ANY("sigaltstack", "rare"),
    ANY("kill", "rare"),
    ANY("clone3", "threads"),
    ANY("clone", "threads' fallback, the --async-teardown helper"),
    ANY("wait4", "rare"),
    ANY("mremap", "malloc"),
    ANY("mlock", "rare"),
    ANY("memfd_create", "rare: guest memory"),
    ANY("ftruncate", "rare: guest memory"),
    ANY("sched_getaffinity", "rare"),
    ANY("sched_setaffinity", "rare"),
    ANY("getrlimit", "rare"),
    ANY("prlimit64", "rare"),
    ANY("uname", "rare"),
    ANY("sysinfo", "rare"),
    ANY("getuid", "rare"),
    ANY("geteuid", "rare"),
    ANY("getgid", "rare"),
    ANY("getegid", "rare"),
    ANY("getrandom", "rare"),
    ANY("ppoll", "rare"),
    ANY("poll", "rare"),
    ANY("select", "rare"),
    ANY("pselect6", "rare"),
    ANY("userfaultfd", "rare: --snapshot restore with Uffd"),
    {"socket", SC_ARG0, AF_UNIX, "the API socket, the uffd handler (unix sockets only)"},
    {"socket", SC_ARG0, AF_INET, "rare: a tap's link and address (SIOC* ioctls)"},
    ANY("socketpair", "rare"),
    ANY("bind", "the API socket"),
    ANY("listen", "the API socket"),
    ANY("accept4", "API clients"),
    ANY("accept", "rare: API clients"),
    ANY("connect", "the uffd handler"),
    ANY("recvfrom", "API requests"),
    ANY("sendto", "API answers"),
    ANY("recvmsg", "rare"),
    ANY("sendmsg", "the uffd handler gets the uffd"),
    ANY("shutdown", "API connections"),
    ANY("getsockopt", "rare"),
    ANY("setsockopt", "rare"),
    ANY("getsockname", "rare"),
    ANY("getpeername", "rare"),
    ANY("rename", "the API socket's name"),
    ANY("renameat", "rare"),
    ANY("renameat2", "rare"),
    ANY("unlink", "a stale API socket"),
    ANY("unlinkat", "rare"),
    ANY("mkdir", "rare"),
    ANY("fchmod", "the API socket's mode"),
    ANY("umask", "sockets bound with a mode (API, qtest)"),
    ANY("chmod", "rare"),
    ANY("fchmodat", "rare"),
    ANY("close_range", "--async-teardown"),
    ANY("sync", "rare"),
    {"ioctl", SC_IOCTL_TYPE, KVMIO, "KVM: the VM, its vCPUs, /dev/kvm"},
    {"ioctl", SC_IOCTL_TYPE, 'T', "terminal (TCGETS, TCSETS), tap (TUNSETIFF, TUNSETOFFLOAD ...)"},
    {"ioctl", SC_IOCTL_TYPE, 0x89, "rare: a tap's link (SIOC*)"},
    {"ioctl", SC_IOCTL_TYPE, 0xAA, "rare: userfaultfd (UFFDIO_*)"},
    {"ioctl", SC_IOCTL_TYPE, 0x12, "rare: a block device's size (BLK*)"},
};

const struct seccomp_list seccomp_lists[SECCOMP_KINDS] = {
    [SECCOMP_MAIN] = {"main", main_rules, N(main_rules)},
    [SECCOMP_VCPU] = {"vcpu", vcpu_rules, N(vcpu_rules)},
    [SECCOMP_BLOCK_IO] = {"block-io", block_io_rules, N(block_io_rules)},
    [SECCOMP_NET_IO] = {"net-io", net_io_rules, N(net_io_rules)},
    [SECCOMP_POOL] = {"pool", pool_rules, N(pool_rules)},
    [SECCOMP_WRITER] = {"writer", writer_rules, N(writer_rules)},
    [SECCOMP_SNAPSHOT] = {"snapshot", snapshot_rules, N(snapshot_rules)},
    [SECCOMP_TEARDOWN] = {"teardown", teardown_rules, N(teardown_rules)},
};
