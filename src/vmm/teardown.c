/* --async-teardown: the slow part of a VM's end (KVM destroying the VM, its irqchip and PIT,
 * and the address space) runs in a helper process after wisp-vmm has exited. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/thread_kind.h"
#include "vmm/machine.h"

#define TEARDOWN_STACK_SIZE (16 * 1024)

/* Closes every fd except keep_a and keep_b (raw syscalls only: see teardown_child). */
static void close_all_but(unsigned keep_a, unsigned keep_b)
{
    unsigned lo = keep_a < keep_b ? keep_a : keep_b, hi = keep_a < keep_b ? keep_b : keep_a;
    if (lo > 0)
        syscall(SYS_close_range, 0, lo - 1, 0);
    if (hi > lo + 1)
        syscall(SYS_close_range, lo + 1, hi - 1, 0);
    syscall(SYS_close_range, hi + 1, ~0U, 0);
}

/*
 * The helper: keeps only the VM fd (the last reference to the VM once wisp-vmm's own fds are
 * closed by its exit) and the read end of a pipe whose write end only wisp-vmm holds, waits for
 * EOF on it (wisp-vmm is gone), then exits, which drops the VM and the shared address space.
 * It shares wisp-vmm's memory and thread pointer (CLONE_VM, no CLONE_SETTLS), so it makes raw
 * syscalls only, and takes its two fds by value in `arg` (never from memory of a frame that
 * has returned).
 */
static int teardown_child(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    unsigned pipe_rd = (unsigned)(v & 0xffffffffu), vm_fd = (unsigned)(v >> 32);
    wisp_thread_enter(WISP_THREAD_TEARDOWN, NULL); /* its filter: raw syscalls only, too */
    close_all_but(pipe_rd, vm_fd); /* stdout/stderr readers see EOF when wisp-vmm exits */
    char c;
    while (syscall(SYS_read, pipe_rd, &c, 1) < 0)
        ;
    return 0;
}

struct helper_clone {
    void *stack;
    uintptr_t arg;
};

static int clone_helper(void *arg)
{
    struct helper_clone *hc = arg;
    pid_t pid = clone(teardown_child, (char *)hc->stack + TEARDOWN_STACK_SIZE, CLONE_VM | SIGCHLD,
                      (void *)hc->arg);
    return pid < 0 ? -errno : pid;
}

int machine_teardown_async(struct machine *m)
{
    /* Devices first, in this process: a drive's cached qcow2 metadata reaches its file, the
     * terminal is restored. Only KVM's own teardown is left to the helper. */
    machine_destroy_devices(m);
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) < 0)
        return -errno;
    void *stack = mmap(NULL, TEARDOWN_STACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        int e = errno;
        close(pipe_fds[0]);
        close(pipe_fds[1]);
        return -e;
    }
    uintptr_t arg = (uintptr_t)(unsigned)pipe_fds[0] | ((uintptr_t)(unsigned)m->vm.fd << 32);
    /* CLONE_VM: no copy of the address space; the fd table is copied, so the helper holds its
     * own reference to the VM. The stack is never unmapped: the helper runs on it until the
     * address space goes away with it. */
    struct helper_clone hc = {stack, arg};
    pid_t pid = wisp_thread_spawn(clone_helper, &hc); /* the spawner thread clones it */
    int e = -pid;
    close(pipe_fds[0]); /* the write end stays open until this process exits */
    if (pid < 0) {
        munmap(stack, TEARDOWN_STACK_SIZE);
        close(pipe_fds[1]);
        return -e;
    }
    /* The heap goes now (a leak checker finds nothing at exit); the vCPU and VM fds and the
     * guest memory's mappings stay for the exit and the helper. */
    kvm_close(&m->kvm);
    free(m->vcpus);
    m->vcpus = NULL;
    free(m->port_logged);
    m->port_logged = NULL;
    return 0;
}
