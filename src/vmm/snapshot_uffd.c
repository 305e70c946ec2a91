/* The Uffd memory backend (docs/snapshot.md, "Uffd"), as Firecracker's: guest RAM is anonymous
 * memory registered with a userfaultfd, and an external handler, listening on a unix socket,
 * gets the fd and the layout (a JSON array of regions) over SCM_RIGHTS and serves each page
 * fault with UFFDIO_COPY (tools/wisp-uffd-handler.c is an example). */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "vmm/snapshot_int.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

int snapshot_uffd_connect(const char *path, struct wisp_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return wisp_err_set(err, ENAMETOOLONG,
                            "mem_backend: backend_path: %s is longer than a socket path may be",
                            path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return wisp_err_sys(err, errno, "socket");
    /* non-blocking: a handler whose backlog is full (EAGAIN) is refused, not waited for */
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return wisp_err_sys(err, errno,
                            "mem_backend: backend_path: cannot connect to the page-fault "
                            "handler at %s",
                            path);
    return steal_fd(&fd);
}

/* /dev/userfaultfd (kernel 6.1 and later, access by file permissions), else the syscall. */
static int uffd_open(struct wisp_err *err)
{
    int fd = -1;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
        close(dev);
    }
    if (fd < 0)
        fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return wisp_err_sys(err, errno,
                            "userfaultfd (neither /dev/userfaultfd nor the system "
                            "call could be used)");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(fd, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(fd);
        return wisp_err_sys(err, e, "UFFDIO_API");
    }
    return fd;
}

static int uffd_register(int fd, const struct guest_mem *mem, struct wisp_err *err)
{
    for (unsigned i = 0; i < mem->nr_regions; i++) {
        struct uffdio_register reg = {
            .range = {.start = (uintptr_t)mem->regions[i].hva, .len = mem->regions[i].size},
            .mode = UFFDIO_REGISTER_MODE_MISSING,
        };
        if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
            return wisp_err_sys(err, errno, "UFFDIO_REGISTER of guest RAM at 0x%llx",
                                (unsigned long long)mem->regions[i].gpa);
    }
    return 0;
}

/* Firecracker's GuestRegionUffdMapping array: page_size in bytes, and page_size_kib (its old
 * name, which also holds bytes) for handlers written against older versions. */
static int layout_json(const struct guest_mem *mem, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "[");
    for (unsigned i = 0; i < mem->nr_regions && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n,
                              "%s{\"base_host_virt_addr\":%llu,\"size\":%llu,\"offset\":%llu,"
                              "\"page_size\":4096,\"page_size_kib\":4096}",
                              i ? "," : "", (unsigned long long)(uintptr_t)mem->regions[i].hva,
                              (unsigned long long)mem->regions[i].size,
                              (unsigned long long)guest_mem_file_offset(mem, i));
    if (n < len)
        n += (size_t)snprintf(buf + n, len - n, "]");
    return n < len ? (int)n : -1;
}

static int send_fd(int sock, const char *msg, size_t len, int fd, struct wisp_err *err)
{
    struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.buf,
                        .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    ssize_t n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n != (ssize_t)len)
        return wisp_err_sys(err, n < 0 ? errno : EIO,
                            "mem_backend: cannot send the userfaultfd to the handler");
    return 0;
}

int snapshot_uffd_map(struct guest_mem *mem, uint64_t bytes, int sock, int *uffd_out,
                      struct wisp_err *err)
{
    int r = guest_mem_create(mem, bytes, err);
    if (r < 0)
        return r;
    mem->fresh_zero = false; /* the handler fills it */
    int fd = uffd_open(err);
    if (fd < 0)
        return fd;
    char msg[1024];
    r = uffd_register(fd, mem, err);
    if (r == 0 && layout_json(mem, msg, sizeof(msg)) < 0)
        r = wisp_err_set(err, E2BIG, "the memory layout does not fit a message");
    if (r == 0)
        r = send_fd(sock, msg, strlen(msg), fd, err);
    if (r < 0) {
        close(fd);
        return r;
    }
    *uffd_out = fd;
    return 0;
}
