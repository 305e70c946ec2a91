/* wisp-vsock-helper: the guest side of tests/kernel/devices_test.py's vsock checks, for the
 * kit's initramfs (busybox has no AF_VSOCK). Static, no libc beyond sockets.
 *   wisp-vsock-helper CONNECT_PORT LISTEN_PORT
 * connects to the host (CID 2) at CONNECT_PORT, sends a line, reads the echo until the host
 * closes and prints "wisp-dev: vsock echo <line>"; then listens on LISTEN_PORT, accepts one
 * connection, reads it to its end and prints "wisp-dev: vsock got <bytes>". Exits 1 on error. */
#include <errno.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what)
{
    printf("wisp-dev: vsock %s: %s\n", what, strerror(errno));
    return 1;
}

static ssize_t read_all(int fd, char *buf, size_t len)
{
    size_t got = 0;
    ssize_t n;
    while (got < len - 1 && (n = read(fd, buf + got, len - 1 - got)) > 0)
        got += (size_t)n;
    buf[got] = 0;
    if (got && buf[got - 1] == '\n')
        buf[--got] = 0;
    return (ssize_t)got;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s CONNECT_PORT LISTEN_PORT\n", argv[0]);
        return 2;
    }
    static const char line[] = "hello from linux over vsock\n";
    char buf[4096];
    struct sockaddr_vm sa = {
        .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_HOST, .svm_port = (unsigned)atoi(argv[1])};
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return fail("connect");
    if (write(fd, line, sizeof(line) - 1) != (ssize_t)sizeof(line) - 1)
        return fail("write");
    shutdown(fd, SHUT_WR);
    read_all(fd, buf, sizeof(buf));
    printf("wisp-dev: vsock echo %s\n", buf);
    close(fd);

    struct sockaddr_vm la = {
        .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)atoi(argv[2])};
    int l = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&la, sizeof(la)) < 0 || listen(l, 1) < 0)
        return fail("listen");
    printf("wisp-dev: vsock listening\n");
    fflush(stdout);
    int c = accept(l, NULL, NULL);
    if (c < 0)
        return fail("accept");
    read_all(c, buf, sizeof(buf));
    printf("wisp-dev: vsock got %s\n", buf);
    close(c);
    close(l);
    return 0;
}
