/*
 * An example page-fault handler for wisp-vmm's Uffd memory backend (docs/snapshot.md, "Uffd"),
 * in the shape of Firecracker's: it listens on a unix socket, takes one connection from
 * wisp-vmm (PUT /snapshot/load with mem_backend {"backend_type": "Uffd", "backend_path": SOCK}),
 * receives the userfaultfd (SCM_RIGHTS) with the guest memory layout (a JSON array of
 * {"base_host_virt_addr", "size", "offset", "page_size"}), and serves every missing-page fault
 * by copying the page from the memory file (UFFDIO_COPY). It keeps the connection open while it
 * serves: wisp-vmm ends the VM when it closes. It exits when wisp-vmm goes away.
 *
 *   wisp-uffd-handler SOCKET MEM_FILE [--ready-fd N]
 *
 * With --ready-fd, "ready\n" is written to fd N once the socket listens (for scripts); on
 * stderr it reports how many pages it served when it ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_REGIONS 8
#define PAGE        4096ul

struct region {
    uint64_t base, size, offset;
};

static int die(const char *what)
{
    fprintf(stderr, "wisp-uffd-handler: %s: %s\n", what, strerror(errno));
    return 1;
}

static int listen_on(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0)
        return -1;
    return fd;
}

/* The message: the layout as text, the userfaultfd as ancillary data. */
static int receive(int conn, char *buf, size_t len, int *uffd)
{
    union {
        char b[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = len - 1};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.b,
                        .msg_controllen = sizeof(control.b)};
    ssize_t n = recvmsg(conn, &mh, MSG_CMSG_CLOEXEC);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    if (!c || c->cmsg_type != SCM_RIGHTS) {
        errno = EPROTO;
        return -1;
    }
    memcpy(uffd, CMSG_DATA(c), sizeof(int));
    return 0;
}

/* The value of "key": N in the object that starts at p (a small, fixed JSON shape). */
static int field(const char *p, const char *end, const char *key, uint64_t *out)
{
    char pat[48];
    snprintf(pat, sizeof(pat), "\"%s\":", key);
    const char *at = strstr(p, pat);
    if (!at || at > end)
        return -1;
    *out = strtoull(at + strlen(pat), NULL, 10);
    return 0;
}

static int parse_layout(const char *msg, struct region *r, unsigned *nr)
{
    *nr = 0;
    for (const char *p = strchr(msg, '{'); p && *nr < MAX_REGIONS; p = strchr(p + 1, '{')) {
        const char *end = strchr(p, '}');
        if (!end || field(p, end, "base_host_virt_addr", &r[*nr].base) < 0 ||
            field(p, end, "size", &r[*nr].size) < 0 || field(p, end, "offset", &r[*nr].offset) < 0)
            return -1;
        (*nr)++;
    }
    return *nr ? 0 : -1;
}

/* One fault: the page from the file at the region's offset (zeroes beyond its end). */
static int serve_fault(int uffd, const struct region *r, unsigned nr, const uint8_t *file,
                       uint64_t file_size, uint64_t addr)
{
    static uint8_t zero[PAGE];
    addr &= ~(PAGE - 1);
    for (unsigned i = 0; i < nr; i++) {
        if (addr < r[i].base || addr - r[i].base >= r[i].size)
            continue;
        uint64_t off = r[i].offset + (addr - r[i].base);
        struct uffdio_copy copy = {.dst = addr,
                                   .src = (uintptr_t)(off + PAGE <= file_size ? file + off : zero),
                                   .len = PAGE};
        if (ioctl(uffd, UFFDIO_COPY, &copy) < 0 && errno != EEXIST)
            return -1; /* EEXIST: another fault filled it first */
        return 0;
    }
    errno = EFAULT;
    return -1;
}

static int serve(int conn, int uffd, const struct region *r, unsigned nr, const uint8_t *file,
                 uint64_t size)
{
    unsigned long served = 0;
    struct pollfd fds[2] = {{.fd = uffd, .events = POLLIN}, {.fd = conn, .events = POLLIN}};
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return die("poll");
        }
        if (fds[1].revents) { /* wisp-vmm closed the connection: it is gone */
            char c;
            if (read(conn, &c, 1) <= 0)
                break;
        }
        if (!(fds[0].revents & POLLIN))
            continue;
        struct uffd_msg msg;
        ssize_t n = read(uffd, &msg, sizeof(msg));
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n != sizeof(msg))
            break; /* the VM's memory is gone */
        if (msg.event != UFFD_EVENT_PAGEFAULT)
            continue;
        if (serve_fault(uffd, r, nr, file, size, msg.arg.pagefault.address) < 0)
            return die("UFFDIO_COPY");
        served++;
    }
    fprintf(stderr, "wisp-uffd-handler: served %lu pages\n", served);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3 && !(argc == 5 && !strcmp(argv[3], "--ready-fd"))) {
        fprintf(stderr, "usage: wisp-uffd-handler SOCKET MEM_FILE [--ready-fd N]\n");
        return 2;
    }
    int mem = open(argv[2], O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (mem < 0 || fstat(mem, &st) < 0)
        return die(argv[2]);
    const uint8_t *file =
        st.st_size ? mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, mem, 0) : NULL;
    if (file == MAP_FAILED)
        return die("mmap");
    int lfd = listen_on(argv[1]);
    if (lfd < 0)
        return die(argv[1]);
    if (argc == 5 && write(atoi(argv[4]), "ready\n", 6) != 6)
        return die("--ready-fd");
    int conn = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (conn < 0)
        return die("accept");
    close(lfd);
    unlink(argv[1]);
    char msg[4096];
    int uffd;
    struct region r[MAX_REGIONS];
    unsigned nr;
    if (receive(conn, msg, sizeof(msg), &uffd) < 0)
        return die("receiving the userfaultfd");
    if (parse_layout(msg, r, &nr) < 0) {
        fprintf(stderr, "wisp-uffd-handler: cannot parse the layout: %s\n", msg);
        return 1;
    }
    return serve(conn, uffd, r, nr, file, (uint64_t)st.st_size);
}
