/* libFuzzer target: 9P2000.L messages to the file server of src/virtio/p9_*.c over a temporary
 * share. Each input is a new session (Tversion with msize 65536 and Tattach of fid 0 are sent
 * first), then its bytes are cut into messages by their own size fields (the last one, or one
 * whose size runs past the input, is sent with the bytes that are left), each answered into a
 * reply buffer whose size the input's first byte picks (a Tread first through the direct path,
 * into that buffer split in three). Every reply must be well formed (its
 * size field its length, at most the buffer) and the directory beside the share must never
 * change: a file created, removed or written there, or its "secret" touched, is a confinement
 * bug, and the target aborts.
 *
 * Input: cap[1] then messages size[4] type[1] tag[2] body. */
#include <endian.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "virtio/p9.h"
#include "virtio/p9_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct p9_server *server;
static char outside[128], base[64];
static struct stat outside_st, secret_st, base_st;
static uint8_t *reply;

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        abort();
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st, (void)type, (void)ftw;
    (void)remove(path);
    return 0;
}

/* At exit (libFuzzer ends with exit()): the share and what the inputs made in it. */
static void remove_share(void)
{
    p9_server_destroy(server);
    char share[128];
    snprintf(share, sizeof(share), "%s/share", base);
    (void)chmod(share, 0755); /* an input may have taken the root's permissions away */
    (void)nftw(base, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void make_share(void)
{
    snprintf(base, sizeof(base), "%s/wisp-p9-fuzz-XXXXXX", getenv("TMPDIR") ?: "/tmp");
    if (!mkdtemp(base))
        abort();
    char share[128], p[256];
    snprintf(share, sizeof(share), "%s/share", base);
    snprintf(outside, sizeof(outside), "%s/outside", base);
    if (mkdir(share, 0755) || mkdir(outside, 0755))
        abort();
    snprintf(p, sizeof(p), "%s/secret", outside);
    write_file(p, "SECRET");
    snprintf(p, sizeof(p), "%s/file", share);
    write_file(p, "hello");
    snprintf(p, sizeof(p), "%s/dir", share);
    if (mkdir(p, 0755))
        abort();
    snprintf(p, sizeof(p), "%s/dir/inner", share);
    write_file(p, "inner");
    snprintf(p, sizeof(p), "%s/abs", share);
    if (symlink(outside, p))
        abort();
    snprintf(p, sizeof(p), "%s/rel", share);
    if (symlink("../outside", p))
        abort();
    struct wisp_err err = {0};
    if (p9_server_create(&server, share, false, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    snprintf(p, sizeof(p), "%s/secret", outside);
    if (stat(outside, &outside_st) || stat(p, &secret_st) || stat(base, &base_st))
        abort();
    reply = malloc(P9_MAX_MSIZE);
    atexit(remove_share);
}

static bool same(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_size == b->st_size && a->st_mode == b->st_mode &&
           a->st_uid == b->st_uid && a->st_nlink == b->st_nlink &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void check_outside(void)
{
    struct stat o, s, b;
    char p[256];
    snprintf(p, sizeof(p), "%s/secret", outside);
    if (stat(outside, &o) || stat(p, &s) || stat(base, &b) || !same(&o, &outside_st) ||
        !same(&s, &secret_st) || !same(&b, &base_st)) {
        fprintf(stderr, "p9_fuzz: the directory beside the share changed: confinement broken\n");
        abort();
    }
}

static void send(const uint8_t *msg, size_t len, size_t cap)
{
    /* a Tread straight into buffers split as Linux's zero-copy reads split them (a small
     * header buffer, then pages), the rest as a reply in one buffer */
    struct iovec in[3] = {
        {reply, cap < 7 ? cap : 7},
        {reply + (cap < 7 ? cap : 7), cap > 4103 ? 4096 : (cap > 7 ? cap - 7 : 0)},
        {reply + (cap > 4103 ? 4103 : cap), cap > 4103 ? cap - 4103 : 0}};
    size_t n = p9_server_read_direct(server, msg, len, in, 3, cap);
    if (!n)
        n = p9_server_handle(server, msg, len, reply, cap);
    if (n > cap)
        abort();
    if (n) {
        uint32_t sz;
        memcpy(&sz, reply, 4);
        if (n < P9_HEADER_LEN || le32toh(sz) != n)
            abort();
    }
}

static void send_fields(uint8_t type, const uint8_t *body, size_t len)
{
    uint8_t m[64];
    uint32_t sz = htole32((uint32_t)(P9_HEADER_LEN + len));
    memcpy(m, &sz, 4);
    m[4] = type;
    m[5] = m[6] = 0;
    memcpy(m + P9_HEADER_LEN, body, len);
    send(m, P9_HEADER_LEN + len, P9_MAX_MSIZE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!server)
        make_share();
    if (size < 1)
        return 0;
    static const size_t caps[] = {11, 64, 300, 4096, 65536, P9_MAX_MSIZE};
    size_t cap = caps[data[0] % (sizeof(caps) / sizeof(caps[0]))];
    data++, size--;
    /* Tversion 65536 "9P2000.L"; Tattach fid 0, afid NOFID, "", "", uid 0 */
    static const uint8_t version[] = {0, 0, 1, 0, 8, 0, '9', 'P', '2', '0', '0', '0', '.', 'L'};
    static const uint8_t attach[] = {0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0};
    send_fields(P9_TVERSION, version, sizeof(version));
    send_fields(P9_TATTACH, attach, sizeof(attach));
    while (size >= 4) {
        uint32_t len;
        memcpy(&len, data, 4);
        len = le32toh(len);
        size_t n = len >= 4 && len <= size ? len : size;
        send(data, n, cap);
        data += n, size -= n;
    }
    p9_server_reset(server);
    check_outside();
    return 0;
}
