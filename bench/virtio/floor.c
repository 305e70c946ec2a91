/* wisp-bench-virtio-floor: the host's own cost of what a virtio request asks of it, without a
 * VM. bench/virtio/virtio_bench.py runs it beside the VMMs: the CPU time per request of plain
 * system calls on the same file or tap is the least any VMM can spend, since moving the data
 * (the kernel's copy, the tap's path) is part of every request.
 *
 *   wisp-bench-virtio-floor blk FILE OP KIB COUNT    OP randread|randwrite|seqread|seqwrite:
 *       COUNT preadv/pwritev calls of KIB KiB at the offsets guest/bench_blk.c uses (the same
 *       generator; random requests at multiples of their size), one at a time
 *   wisp-bench-virtio-floor net TAP BYTES WINDOW COUNT
 *       COUNT frames of BYTES bytes through the tap (with the 12-byte virtio-net header the
 *       VMMs use), WINDOW written, then WINDOW read back, until COUNT came back
 *
 * Prints "floor: cpu_us_per_request U wall_us_per_request W" (CPU = user + system time of this
 * process, getrusage). Exit status 0, or 1 with a message. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BLOCK   4096u
#define HDR_LEN 12

struct clock_pair {
    double cpu_s, wall_s;
};

static struct clock_pair clock_now(void)
{
    struct rusage ru;
    struct timespec ts;
    getrusage(RUSAGE_SELF, &ru);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (struct clock_pair){
        .cpu_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
        .wall_s = (double)ts.tv_sec + ts.tv_nsec / 1e9,
    };
}

static void report(struct clock_pair start, unsigned long count)
{
    struct clock_pair end = clock_now();
    printf("floor: cpu_us_per_request %.3f wall_us_per_request %.3f\n",
           (end.cpu_s - start.cpu_s) / (double)count * 1e6,
           (end.wall_s - start.wall_s) / (double)count * 1e6);
}

static unsigned long number(const char *s, unsigned long min, unsigned long max, const char *what)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || !*s || *end || v < min || v > max) {
        fprintf(stderr, "wisp-bench-virtio-floor: %s: '%s' is not a number in [%lu, %lu]\n", what,
                s, min, max);
        exit(2);
    }
    return v;
}

/* guest/bench.h's generator, so that the offsets are the guest's */
static uint64_t xorshift(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static int floor_blk(const char *path, const char *op, unsigned long kib, unsigned long count)
{
    int write = !strcmp(op, "randwrite") || !strcmp(op, "seqwrite");
    int sequential = !strncmp(op, "seq", 3);
    if (!write && strcmp(op, "randread") && strcmp(op, "seqread")) {
        fprintf(stderr, "wisp-bench-virtio-floor: unknown operation '%s'\n", op);
        return 2;
    }
    int fd = open(path, O_RDWR);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "wisp-bench-virtio-floor: %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (kib % 4) {
        fprintf(stderr, "wisp-bench-virtio-floor: %lu KiB is not a multiple of 4 KiB\n", kib);
        return 2;
    }
    size_t bytes = kib * 1024;
    uint64_t per = bytes / BLOCK, span = (uint64_t)st.st_size / BLOCK / per,
             state = 0x9e3779b97f4a7c15ull;
    uint64_t next = 0;
    void *buf = aligned_alloc(BLOCK, bytes);
    if (!buf || span == 0) {
        fprintf(stderr, "wisp-bench-virtio-floor: %s: too small for %lu KiB requests\n", path, kib);
        return 1;
    }
    memset(buf, 0, bytes);
    struct clock_pair start = clock_now();
    for (unsigned long i = 0; i < count; i++) {
        uint64_t block = sequential ? next % (span * per) : xorshift(&state) % span * per;
        next = block + per;
        for (size_t off = 0; write && off < bytes; off += BLOCK) /* bench_blk.c's block tags */
            *(uint64_t *)((char *)buf + off) = block + off / BLOCK;
        struct iovec iov = {.iov_base = buf, .iov_len = bytes};
        ssize_t n = write ? pwritev(fd, &iov, 1, (off_t)(block * BLOCK))
                          : preadv(fd, &iov, 1, (off_t)(block * BLOCK));
        if (n != (ssize_t)bytes) {
            fprintf(stderr, "wisp-bench-virtio-floor: %s at block %llu: %s\n", op,
                    (unsigned long long)block, n < 0 ? strerror(errno) : "short");
            return 1;
        }
    }
    report(start, count);
    return 0;
}

static int tap_open(const char *name)
{
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR};
    int hdr = HDR_LEN;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (fd < 0 || ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
        fprintf(stderr, "wisp-bench-virtio-floor: tap %s: %s\n", name, strerror(errno));
        return -1;
    }
    return fd;
}

/* Reads frames until one of `len` bytes starting like `frame` comes; -1 after timeout_ms. */
static int read_ours(int fd, const unsigned char *frame, size_t len, int timeout_ms)
{
    static unsigned char back[HDR_LEN + 65536];
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, timeout_ms) != 1)
            return -1;
        ssize_t n = read(fd, back, sizeof(back));
        if (n < 0)
            return -1;
        /* anything else (the tap reflects only what it gets, but) is not counted */
        if (n == (ssize_t)len && !memcmp(back + HDR_LEN, frame + HDR_LEN, 14))
            return 0;
    }
}

/* The first frames after the tap's carrier comes up may be dropped (the kernel activates its
 * queue asynchronously): one at a time until one comes back. */
static int probe(int fd, const char *tap, const unsigned char *frame, size_t len)
{
    for (int tries = 0; tries < 50; tries++) {
        if (write(fd, frame, len) < 0)
            break;
        if (read_ours(fd, frame, len, 200) == 0)
            return 0;
    }
    fprintf(stderr, "wisp-bench-virtio-floor: tap %s reflects no frame\n", tap);
    return -1;
}

static int floor_net(const char *tap, unsigned long bytes, unsigned long window,
                     unsigned long count)
{
    int fd = tap_open(tap);
    if (fd < 0)
        return 1;
    static unsigned char frame[HDR_LEN + 1514];
    static const unsigned char mac[6] = {0x02, 0, 0, 0, 0, 0x10}, src[6] = {0x02, 0, 0, 0, 0, 0xfe};
    memcpy(frame + HDR_LEN, mac, 6);
    memcpy(frame + HDR_LEN + 6, src, 6);
    frame[HDR_LEN + 12] = 0x88; /* EtherType 0x88b5, as guest/bench_net.c */
    frame[HDR_LEN + 13] = 0xb5;
    if (probe(fd, tap, frame, HDR_LEN + bytes) < 0)
        return 1;
    struct clock_pair start = clock_now();
    for (unsigned long done = 0; done < count;) {
        unsigned long burst = count - done < window ? count - done : window;
        for (unsigned long i = 0; i < burst; i++)
            if (write(fd, frame, HDR_LEN + bytes) != (ssize_t)(HDR_LEN + bytes)) {
                fprintf(stderr, "wisp-bench-virtio-floor: write to %s: %s\n", tap, strerror(errno));
                return 1;
            }
        for (unsigned long got = 0; got < burst; got++)
            if (read_ours(fd, frame, HDR_LEN + bytes, 2000) < 0) {
                fprintf(stderr, "wisp-bench-virtio-floor: %s: a frame did not come back\n", tap);
                return 1;
            }
        done += burst;
    }
    report(start, count);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "blk"))
        return floor_blk(argv[2], argv[3], number(argv[4], 4, 1024, "KiB"),
                         number(argv[5], 1, 1ul << 40, "count"));
    if (argc == 6 && !strcmp(argv[1], "net"))
        return floor_net(argv[2], number(argv[3], 60, 1514, "bytes"),
                         number(argv[4], 1, 4096, "window"),
                         number(argv[5], 1, 1ul << 40, "count"));
    fprintf(stderr, "usage: wisp-bench-virtio-floor blk FILE OP KIB COUNT\n"
                    "       wisp-bench-virtio-floor net TAP BYTES WINDOW COUNT\n");
    return 2;
}
