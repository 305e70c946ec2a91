/* wisp-vmm's per-thread allow-lists (seccomp_lists.h, docs/security.md). */
#include "vmm/seccomp_lists.h"

#include <linux/if_tun.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#define N(a) (unsigned)(sizeof(a) / sizeof((a)[0]))
#define ANY(s, why)                                                                                \
    {                                                                                              \
        s, SC_ANY, 0, why                                                                          \
    }
#define NOEXEC(s, why)                                                                             \
    {                                                                                              \
        s, SC_NOEXEC, 0, why                                                                       \
    }
#define IOCTL(req, why)                                                                            \
    {                                                                                              \
        "ioctl", SC_IOCTL, req, why                                                                \
    }

/*
 * Each entry says why it is there. tests/security/seccomp_coverage.py traces every kind of
 * thread over ring-3 workloads (disk, net, vsock, balloon, rng, the API, a snapshot and its
 * restore, --uid, --async-teardown) and fails on a call missing from a list and on an entry no
 * thread used unless its reason starts with "rare:", which then names the path that needs it
 * but is not in those workloads (an error path, an option, a rare event).
 */

/* What glibc itself does on any thread: locks, signal masks, the thread's end. */
#define THREAD_BASICS                                                                              \
    ANY("futex", "locks, condition variables"), ANY("rt_sigprocmask", "pthread signal masks"),     \
        ANY("madvise", "glibc frees a thread's stack at its end (MADV_DONTNEED)"),                 \
        ANY("exit_group", "rare: a fatal error ends the process from this thread"),                \
        ANY("rt_sigreturn",                                                                        \
            "rare: a signal handler returns (glibc's setxid broadcast under --uid, SIGSYS "        \
            "under --seccomp=log)"),                                                               \
        ANY("restart_syscall", "rare: a wait interrupted by the setxid broadcast"),                \
        ANY("clock_gettime", "rare: the vDSO's fallback"),                                         \
        ANY("gettid", "rare: glibc's abort and raise"),                                            \
        ANY("getpid", "rare: glibc's setxid broadcast handler checks the sender (--uid)"),         \
        ANY("tgkill", "rare: glibc's raise/abort"), ANY("sched_yield", "rare: glibc spin locks"),  \
        ANY("setresuid", "rare: --uid: glibc makes every thread change its ids"),                  \
        ANY("setresgid", "rare: --gid: glibc makes every thread change its ids"),                  \
        ANY("setgroups", "rare: --uid: glibc makes every thread change its groups")

/* The end of a thread wisp started. */
#define THREAD_END ANY("exit", "the thread ends")

/* malloc on a thread that seldom allocates (its arena made or grown, a large block mapped). */
#define MALLOC_RARE                                                                                \
    ANY("brk", "rare: malloc"), ANY("munmap", "rare: free of a large block"),                      \
        NOEXEC("mmap", "rare: malloc (a thread's arena, a large block); never executable"),        \
        NOEXEC("mprotect", "rare: malloc grows a thread's arena; never executable")

/* An event loop (common/evloop.c): epoll, eventfds, posted calls. */
#define EVLOOP                                                                                     \
    ANY("epoll_wait", "the loop"), ANY("epoll_ctl", "sources added and removed"),                  \
        ANY("read", "eventfds, timerfds"), ANY("write", "eventfds: wake-ups, irqfds"),             \
        ANY("close", "sources closed")

static const struct seccomp_rule vcpu_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    IOCTL(KVM_RUN, "runs the guest"),
    IOCTL(KVM_GET_REGS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_SREGS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_XSAVE, "snapshot: vCPU state"),
    IOCTL(KVM_GET_XSAVE2, "rare: snapshot: vCPU state where KVM has XSAVE2 (AMX)"),
    IOCTL(KVM_GET_XCRS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_DEBUGREGS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_LAPIC, "snapshot: vCPU state"),
    IOCTL(KVM_GET_VCPU_EVENTS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_MP_STATE, "snapshot: vCPU state"),
    IOCTL(KVM_GET_MSRS, "snapshot: vCPU state"),
    IOCTL(KVM_GET_CPUID2, "snapshot: vCPU state"),
    IOCTL(KVM_GET_TSC_KHZ, "snapshot: vCPU state"),
    IOCTL(KVM_GET_MSR_FEATURE_INDEX_LIST, "snapshot: which MSRs to save"),
    IOCTL(KVM_CHECK_EXTENSION, "snapshot probes XSAVE2"),
    IOCTL(KVM_IRQ_LINE, "rare: a level interrupt set by a register access (machine.c set_irq)"),
    IOCTL(TUNSETOFFLOAD, "virtio-net FEATURES_OK: the tap's offloads"),
    ANY("read", "the eventfd of a call posted to it"),
    ANY("write", "wake-ups of device loops, irqfds, the console, the stop request"),
};

static const struct seccomp_rule block_io_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    EVLOOP,
    ANY("epoll_create1", "its loop, made on the thread"),
    ANY("eventfd2", "its loop's wake-up and the ring's completion eventfd"),
    ANY("timerfd_create", "its loop's timers"),
    ANY("timerfd_settime", "timers: qcow2 cache flushes, rate limits"),
    ANY("io_uring_enter", "the drive's ring (liburing)"),
    ANY("io_uring_setup", "the drive's ring, set up on its thread"),
    ANY("io_uring_register", "the ring's file and eventfd"),
    ANY("preadv", "aio=sync: data; qcow2 metadata (block/file.c reads with preadv only)"),
    ANY("pwritev", "aio=sync: data; qcow2 metadata (and writes with pwritev only)"),
    ANY("fdatasync", "aio=sync: a flush"),
    ANY("fallocate", "rare: discard and write zeroes on a raw image with aio=sync; a qcow2 "
                     "file grown in steps"),
    ANY("ftruncate", "rare: a qcow2 file's end (resize, repair)"),
    ANY("newfstatat", "an image's size (fstat)"),
    ANY("lseek", "rare: SEEK_DATA/SEEK_HOLE of a raw image (block status)"),
    ANY("openat", "PATCH /drives: the new image opened here"),
    ANY("readlink", "PATCH /drives: realpath() of the new image"),
    ANY("getcwd", "rare: PATCH /drives: realpath() of a relative path"),
    ANY("fcntl", "rare: PATCH /drives: the new image's lock and flags (O_DIRECT)"),
};

static const struct seccomp_rule net_io_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    EVLOOP,
    ANY("timerfd_create", "its loop's timers"),
    ANY("timerfd_settime", "a rate limit's timer"),
    ANY("readv", "frames from the tap"),
    ANY("writev", "frames to the tap"),
    ANY("recvmsg", "rare: vsock: data from a host connection"),
    ANY("sendmsg", "vsock: data to a host connection"),
    ANY("accept4", "vsock: a host connection (the CONNECT handshake)"),
    ANY("connect", "vsock: a guest connects to a host port (<uds>_PORT)"),
    {"socket", SC_ARG0, AF_UNIX, "vsock: a host connection (unix sockets only)"},
    ANY("shutdown", "rare: vsock: a half-closed connection"),
};

/* A pmem device's loop serves one queue and closes nothing (its sources are removed, the loop
 * destroyed by the thread that stops it): EVLOOP without close. */
static const struct seccomp_rule pmem_io_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    ANY("epoll_wait", "the loop"),
    ANY("epoll_ctl", "the queue's notification added and removed"),
    ANY("read", "eventfds: the queue's notification, posted calls"),
    ANY("write", "eventfds: the interrupt (irqfd), a posted call's completion"),
    ANY("fdatasync", "a flush request of a rw pmem device"),
};

/* A virtio-9p share's thread (virtio/virtio_9p.c): file system calls on fds and one checked
 * name, never a path (docs/9p.md). */
static const struct seccomp_rule p9_io_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    EVLOOP,
    ANY("openat2", "a walk or create: one name beneath a directory fd"),
    ANY("openat", "a fid's file reopened through /proc/self/fd"),
    ANY("newfstatat", "Tgetattr, qids"),
    ANY("fstatfs", "Tstatfs"),
    ANY("getdents64", "Treaddir"),
    ANY("lseek", "Treaddir's offset"),
    ANY("preadv", "Tread, straight into the guest's buffers"),
    ANY("pread64", "rare: Tread of an xattr list or a request the direct path leaves"),
    ANY("pwrite64", "Twrite"),
    ANY("fsync", "rare: Tfsync"),
    ANY("fdatasync", "rare: Tfsync"),
    ANY("ftruncate", "rare: Tsetattr's size"),
    ANY("fchmodat", "rare: Tsetattr's mode"),
    ANY("fchownat", "rare: Tsetattr's owner, a created file's owner"),
    ANY("utimensat", "rare: Tsetattr's times"),
    ANY("mkdirat", "rare: Tmkdir"),
    ANY("mknodat", "rare: Tmknod"),
    ANY("symlinkat", "rare: Tsymlink"),
    ANY("readlinkat", "rare: Treadlink"),
    ANY("linkat", "rare: Tlink"),
    ANY("renameat", "rare: Trenameat, Trename"),
    ANY("renameat2", "rare: Trenameat (newer glibc)"),
    ANY("unlinkat", "rare: Tunlinkat, Tremove"),
    ANY("fgetxattr", "rare: Txattrwalk"),
    ANY("flistxattr", "rare: Txattrwalk of the names"),
    ANY("fsetxattr", "rare: Txattrcreate's Tclunk"),
    ANY("fremovexattr", "rare: Txattrcreate's Tclunk of size 0"),
    ANY("fcntl", "F_DUPFD_CLOEXEC: a fid's fd for a walk"),
};

static const struct seccomp_rule pool_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    ANY("preadv", "data"),
    ANY("pwritev", "data"),
    ANY("fdatasync", "flush"),
    ANY("fallocate", "rare: discard and write zeroes on a drive with aio=threads"),
    ANY("write", "the completion eventfd"),
    ANY("newfstatat", "an image's size (fstat)"),
};

static const struct seccomp_rule writer_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    ANY("write", "the output"),
    ANY("fallocate", "rare: --console-log-max punches old console output out of its file"),
};

static const struct seccomp_rule snapshot_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    ANY("openat", "the temporary state and memory files, /proc/self/pagemap"),
    ANY("close", "those files"),
    ANY("ftruncate", "the memory file's size"),
    ANY("pwrite64", "state and memory"),
    ANY("pread64", "/proc/self/pagemap"),
    ANY("write", "wake-ups of device loops (quiesce, resume)"),
    ANY("fdatasync", "rare: the files reach the disk"),
    ANY("rename", "the files get their names"),
    ANY("unlink", "rare: a failed snapshot's temporary files"),
    IOCTL(KVM_GET_IRQCHIP, "the in-kernel PIC and IOAPIC"),
    IOCTL(KVM_GET_PIT2, "the in-kernel PIT"),
    IOCTL(KVM_GET_CLOCK, "kvmclock"),
    IOCTL(KVM_GET_DIRTY_LOG,
          "rare: diff snapshots (suite snapshot: snapshot-diff, which is not traced)"),
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

/* The spawner: creates every other thread and the --async-teardown helper (seccomp.c). Its
 * filter also holds every list but the main one (its children inherit it), and what a new
 * thread does between its start and its own filter: glibc's thread set-up, its name, a vCPU's
 * set-up ioctls. */
static const struct seccomp_rule spawner_rules[] = {
    THREAD_BASICS,
    THREAD_END,
    MALLOC_RARE,
    ANY("clone3", "pthread_create"),
    ANY("clone", "the --async-teardown helper (CLONE_VM)"),
    {"seccomp", SC_ARG0, SECCOMP_SET_MODE_FILTER, "each thread it starts loads its own filter"},
    NOEXEC("mmap", "a new thread's stack; never executable"),
    NOEXEC("mprotect", "a new thread's stack guard; never executable"),
    ANY("rseq", "glibc registers it at a thread's start"),
    ANY("set_robust_list", "glibc at a thread's start"),
    ANY("prctl", "a new thread names itself (PR_SET_NAME)"),
    {"sched_setaffinity", SC_ARG0, 0, "rare: a vCPU pins itself (--vcpu-affinity): pid 0"},
    /* a vCPU's set-up before its own filter (vcpu_thread.c: kvm_vcpu_create, a restore's state) */
    IOCTL(KVM_CREATE_VCPU, "a new vCPU"),
    IOCTL(KVM_SET_CPUID2, "a new vCPU's CPUID"),
    IOCTL(KVM_SET_MSRS, "a new vCPU's MSRs"),
    IOCTL(KVM_SET_MP_STATE, "a new vCPU's MP state"),
    IOCTL(KVM_GET_SREGS, "rare: a new vCPU's segments read back (kvm/vcpu.c)"),
    IOCTL(KVM_GET_TSC_KHZ, "a restore compares the TSC frequency"),
    IOCTL(KVM_SET_TSC_KHZ, "rare: a restore onto a host whose TSC runs at another frequency"),
    IOCTL(KVM_SET_REGS, "a restore: the vCPU's state"),
    IOCTL(KVM_SET_SREGS, "a restore: the vCPU's state"),
    IOCTL(KVM_SET_XSAVE, "a restore: the vCPU's state"),
    IOCTL(KVM_SET_XCRS, "a restore: the vCPU's state"),
    IOCTL(KVM_SET_DEBUGREGS, "a restore: the vCPU's state"),
    IOCTL(KVM_SET_LAPIC, "a restore: the vCPU's state"),
    IOCTL(KVM_SET_VCPU_EVENTS, "a restore: the vCPU's state"),

};

/* The main thread: set-up (KVM, files, taps, sockets), the event loop, the API, the stop path.
 * The threads come from the spawner (not this thread), so nothing here is theirs. */
static const struct seccomp_rule main_rules[] = {
    THREAD_BASICS,
    EVLOOP,
    ANY("brk", "malloc"),
    ANY("munmap", "free of a large block, guest memory at the end"),
    NOEXEC("mmap", "malloc, guest memory, a snapshot's memory file; never executable"),
    NOEXEC("mprotect", "rare: malloc grows an arena; never executable"),
    ANY("mremap", "rare: realloc of a large block"),
    ANY("epoll_create1", "event loops (the main one, libmicrohttpd's)"),
    ANY("eventfd2", "queue notifications and interrupts (ioeventfd, irqfd), loop wake-ups"),
    ANY("timerfd_create", "timers"),
    ANY("timerfd_settime", "timers"),
    ANY("signalfd4", "the loop's signals"),
    ANY("rt_sigaction", "handlers: the vCPU kick, SIGSYS under log"),
    ANY("openat", "/dev/kvm, images, taps, the kernel, snapshot files"),
    ANY("pread64", "images, the kernel, the state file"),
    ANY("preadv", "a drive's first reads at open (qcow2 header and tables)"),
    ANY("pwritev", "a qcow2 drive's metadata written at its close"),
    ANY("fdatasync", "a drive flushed at its close"),
    ANY("getrandom", "virtio-rng's entropy (virtio/rng.c)"),
    ANY("io_uring_setup", "the probe whether io_uring works (virtio/blk.c: a ring of 2, closed)"),
    ANY("lseek", "files"),
    ANY("newfstatat", "files"),
    ANY("readlink", "realpath() of images"),
    ANY("getcwd", "rare: realpath() of a relative path"),
    ANY("fcntl", "flags, image locks (OFD)"),
    ANY("dup2", "rare: --log-path onto stderr (common/log.c)"),
    ANY("pipe2", "--async-teardown's pipe"),
    ANY("setresuid", "--uid (privileges.c)"),
    ANY("setresgid", "--gid (privileges.c)"),
    ANY("getgroups", "--uid: are there supplementary groups to clear (privileges.c)"),
    ANY("setgroups", "rare: --uid when root has supplementary groups (privileges.c)"),
    ANY("prlimit64", "rare: a virtio-9p share raises RLIMIT_NOFILE (each fid holds an fd)"),
    ANY("capset", "--uid (privileges.c)"),
    {"prctl", SC_ARG0, PR_GET_PDEATHSIG, "--uid: the parent-death signal the drop clears"},
    {"prctl", SC_ARG0, PR_SET_PDEATHSIG, "rare: --uid: wisp-jailer's parent-death signal re-armed"},
    ANY("capget", "--uid (privileges.c)"),
    ANY("memfd_create", "guest memory on a memfd (mem_backend memfd, hugetlbfs)"),
    ANY("ftruncate", "the memfd's size"),
    ANY("fallocate", "the balloon on memfd memory punches out the pages (kvm/guest_mem.c)"),
    ANY("userfaultfd", "rare: a Uffd restore where /dev/userfaultfd is missing"),
    {"socket", SC_ARG0, AF_UNIX, "the API socket, the uffd handler (unix sockets only)"},
    {"socket", SC_ARG0, AF_INET, "a tap's link and address (SIOC* ioctls)"},
    ANY("bind", "the API socket"),
    ANY("listen", "the API socket"),
    ANY("accept4", "API clients"),
    ANY("connect", "the Uffd backend's handler"),
    ANY("recvfrom", "API requests"),
    ANY("sendto", "API answers"),
    ANY("sendmsg", "API answers (libmicrohttpd); the uffd handler gets the uffd"),
    ANY("shutdown", "API connections"),
    ANY("getsockopt", "libmicrohttpd's sockets"),
    ANY("getsockname", "libmicrohttpd's socket"),
    ANY("renameat2", "the API socket's name (RENAME_NOREPLACE)"),
    ANY("unlink", "a stale API socket"),
    ANY("fchmod", "the API socket's mode"),
    ANY("umask", "rare: --qtest's socket (tests only)"),
    ANY("tgkill", "kicks the vCPUs (pause, stop, snapshot)"),
    /* KVM: exactly the requests this thread makes (kvm/kvm.c, vm.c, vm_state.c, arch/x86) */
    IOCTL(KVM_GET_API_VERSION, "/dev/kvm"),
    IOCTL(KVM_CHECK_EXTENSION, "/dev/kvm and the VM: capabilities"),
    IOCTL(KVM_GET_VCPU_MMAP_SIZE, "/dev/kvm: a vCPU's kvm_run size"),
    IOCTL(KVM_GET_SUPPORTED_CPUID, "/dev/kvm: the CPUID the vCPUs get"),
    IOCTL(KVM_GET_MSR_INDEX_LIST, "/dev/kvm: the MSRs a vCPU has"),
    IOCTL(KVM_CREATE_VM, "the VM"),
    IOCTL(KVM_ENABLE_CAP, "rare: KVM_CAP_X2APIC_API for more than 255 vCPUs (kvm/vm.c)"),
    IOCTL(KVM_SET_TSS_ADDR, "the VM's TSS"),
    IOCTL(KVM_SET_IDENTITY_MAP_ADDR, "the VM's identity map"),
    IOCTL(KVM_SET_USER_MEMORY_REGION, "guest memory, pmem windows"),
    IOCTL(KVM_CREATE_IRQCHIP, "the in-kernel PIC and IOAPIC"),
    IOCTL(KVM_CREATE_PIT2, "the in-kernel PIT"),
    IOCTL(KVM_SET_IRQCHIP, "the irqchip's set-up and a restore's"),
    IOCTL(KVM_SET_PIT2, "a restore: the PIT"),
    IOCTL(KVM_SET_CLOCK, "a restore: kvmclock"),
    IOCTL(KVM_IOEVENTFD, "queue notifications (virtio)"),
    IOCTL(KVM_IRQFD, "device interrupts (virtio, serial, i8042)"),
    IOCTL(KVM_IRQ_LINE,
          "rare: a level interrupt raised on the main loop (console input to the UART)"),
    IOCTL(KVM_GET_SREGS, "the boot vCPU's registers (arch/x86/vcpu_regs.c)"),
    IOCTL(KVM_SET_SREGS, "the boot vCPU's registers"),
    IOCTL(KVM_SET_REGS, "the boot vCPU's registers"),
    IOCTL(KVM_SET_FPU, "the boot vCPU's FPU"),
    {"ioctl", SC_IOCTL_TYPE, 'T', "terminal (TCGETS, TCSETS), tap (TUNSETIFF, TUNSETOFFLOAD ...)"},
    {"ioctl", SC_IOCTL_TYPE, 0x89, "a tap's link (SIOCGIFINDEX, SIOC*)"},
    {"ioctl", SC_IOCTL_TYPE, 0xAA, "userfaultfd (USERFAULTFD_IOC_NEW, UFFDIO_*)"},
    {"ioctl", SC_IOCTL_TYPE, 0x12, "rare: a block device's size (BLKGETSIZE64)"},
};

const struct seccomp_list seccomp_lists[SECCOMP_KINDS] = {
    [SECCOMP_MAIN] = {"main", main_rules, N(main_rules)},
    [SECCOMP_VCPU] = {"vcpu", vcpu_rules, N(vcpu_rules)},
    [SECCOMP_BLOCK_IO] = {"block-io", block_io_rules, N(block_io_rules)},
    [SECCOMP_NET_IO] = {"net-io", net_io_rules, N(net_io_rules)},
    [SECCOMP_PMEM_IO] = {"pmem-io", pmem_io_rules, N(pmem_io_rules)},
    [SECCOMP_POOL] = {"pool", pool_rules, N(pool_rules)},
    [SECCOMP_WRITER] = {"writer", writer_rules, N(writer_rules)},
    [SECCOMP_SNAPSHOT] = {"snapshot", snapshot_rules, N(snapshot_rules)},
    [SECCOMP_TEARDOWN] = {"teardown", teardown_rules, N(teardown_rules)},
    [SECCOMP_SPAWNER] = {"spawner", spawner_rules, N(spawner_rules)},
    [SECCOMP_P9_IO] = {"p9-io", p9_io_rules, N(p9_io_rules)},
};
