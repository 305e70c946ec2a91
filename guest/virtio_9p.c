/* virtio-9p from ring 3: the device on the command line (ID 9, VIRTIO_9P_MOUNT_TAG, the tag in
 * its configuration space), one request queue, and a 9P2000.L session driven by hand over the
 * share tests/virtio/p9_guest_test.py prepares (hello.txt, abs -> a directory beside the share,
 * big.bin): version, attach, walks (".." at the root stays there, a walk through "abs" stops at
 * the symlink), getattr, open, read, create, write, fsync, setattr, xattrs, mkdir, renameat,
 * link, symlink, readlink, mknod, readdir, statfs, lock, getlock, flush, unlinkat, and refused
 * requests (a lying size, an unknown type, a name with '/'). With "p9.bench=N" it then reads
 * big.bin N times with msize-sized Treads and prints the TSC cycles per MiB (bench/9p). Prints
 * "p9: ok" and the tag; with "p9.hold=1" it then idles until the VM is ended.
 *
 * With "p9.clone=MS" (tests/virtio/p9_guest_test.py --snapshot) it only sets the device up,
 * prints "p9: ready" and waits MS ms with no fid (the host snapshots it meanwhile), then
 * attaches, prints the first line of hello.txt ("p9: hello LINE") and the result of creating
 * made.txt ("p9: create 0" or the errno), and idles holding its fids. */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_9P    9
#define MSIZE           (128 * 1024)
#define P9_RLERROR      7
#define P9_TVERSION     100
#define P9_TATTACH      104
#define P9_TWALK        110
#define P9_TGETATTR     24
#define P9_TLOPEN       12
#define P9_TLCREATE     14
#define P9_TREAD        116
#define P9_TWRITE       118
#define P9_TCLUNK       120
#define P9_TFSYNC       50
#define P9_TSETATTR     26
#define P9_TXATTRWALK   30
#define P9_TXATTRCREATE 32
#define P9_TMKDIR       72
#define P9_TRENAMEAT    74
#define P9_TLINK        70
#define P9_TSYMLINK     16
#define P9_TREADLINK    22
#define P9_TMKNOD       18
#define P9_TREADDIR     40
#define P9_TSTATFS      8
#define P9_TLOCK        52
#define P9_TGETLOCK     54
#define P9_TFLUSH       108
#define P9_TUNLINKAT    76

static struct gvirtq q;
static uint8_t *req, *rep;
static uint32_t req_len, rep_len, rep_at;

static void put(const void *v, uint32_t n)
{
    GUEST_ASSERT(req_len + n <= MSIZE);
    memcpy(req + req_len, v, n);
    req_len += n;
}
static void put8(uint8_t v)
{
    put(&v, 1);
}
static void put16(uint16_t v)
{
    put(&v, 2);
}
static void put32(uint32_t v)
{
    put(&v, 4);
}
static void put64(uint64_t v)
{
    put(&v, 8);
}
static void puts9(const char *s)
{
    uint16_t n = (uint16_t)strlen(s);
    put16(n);
    put(s, n);
}

static void begin(uint8_t type)
{
    req_len = 0;
    put32(0);
    put8(type);
    put16(7); /* the tag */
}

static uint32_t get(void *v, uint32_t n)
{
    GUEST_ASSERT(rep_at + n <= rep_len);
    memcpy(v, rep + rep_at, n);
    rep_at += n;
    return n;
}
static uint8_t get8(void)
{
    uint8_t v;
    get(&v, 1);
    return v;
}
static uint16_t get16(void)
{
    uint16_t v;
    get(&v, 2);
    return v;
}
static uint32_t get32(void)
{
    uint32_t v;
    get(&v, 4);
    return v;
}
static uint64_t get64(void)
{
    uint64_t v;
    get(&v, 8);
    return v;
}

/* Sends the request built since begin(); returns 0 or the Rlerror's errno. */
static uint32_t rpc(void)
{
    memcpy(req, &req_len, 4);
    struct gbuf b[2] = {{req, req_len}, {rep, MSIZE}};
    GUEST_ASSERT(gvirtq_add(&q, b, 1, 1) >= 0);
    gvirtq_kick(&q);
    uint16_t head;
    uint32_t len;
    GUEST_ASSERT(gvirtq_wait_used(&q, &head, &len, 10000));
    GUEST_ASSERT(len >= 7 && len <= MSIZE);
    uint32_t size;
    memcpy(&size, rep, 4);
    GUEST_ASSERT_EQ(size, len);
    GUEST_ASSERT_EQ(rep[5] | rep[6] << 8, 7);
    rep_len = len;
    rep_at = 7;
    if (rep[4] == P9_RLERROR)
        return get32();
    GUEST_ASSERT_EQ(rep[4], req[4] + 1);
    return 0;
}

static uint64_t qid(uint8_t *type)
{
    uint8_t t = get8();
    if (type)
        *type = t;
    (void)get32();
    return get64();
}

static uint32_t walk(uint32_t fid, uint32_t newfid, unsigned n, const char *const *names)
{
    begin(P9_TWALK);
    put32(fid);
    put32(newfid);
    put16((uint16_t)n);
    for (unsigned i = 0; i < n; i++)
        puts9(names[i]);
    return rpc();
}

static void clunk(uint32_t fid)
{
    begin(P9_TCLUNK);
    put32(fid);
    GUEST_ASSERT_EQ(rpc(), 0);
}

static void lopen(uint32_t fid, uint32_t flags)
{
    begin(P9_TLOPEN);
    put32(fid);
    put32(flags);
    GUEST_ASSERT_EQ(rpc(), 0);
}

static uint32_t read_at(uint32_t fid, uint64_t off, uint32_t count, uint8_t **data)
{
    begin(P9_TREAD);
    put32(fid);
    put64(off);
    put32(count);
    GUEST_ASSERT_EQ(rpc(), 0);
    uint32_t n = get32();
    *data = rep + rep_at;
    return n;
}

/* Tversion and Tattach of fid 0 to the share's root; the reply's qid is next to read. */
static void attach(void)
{
    begin(P9_TVERSION);
    put32(MSIZE);
    puts9("9P2000.L");
    GUEST_ASSERT_EQ(rpc(), 0);
    GUEST_ASSERT_EQ(get32(), MSIZE);
    GUEST_ASSERT_EQ(get16(), 8);
    begin(P9_TATTACH);
    put32(0);
    put32(~0u);
    puts9("root");
    puts9("");
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 0);
}

static void session(void)
{
    attach();
    uint8_t t;
    uint64_t root = qid(&t);
    GUEST_ASSERT_EQ(t, 0x80);
    /* ".." at the root, three times, is the root */
    static const char *const up[] = {"..", "..", ".."};
    GUEST_ASSERT_EQ(walk(0, 9, 3, up), 0);
    GUEST_ASSERT_EQ(get16(), 3);
    for (int i = 0; i < 3; i++)
        GUEST_ASSERT_EQ(qid(NULL), root);
    clunk(9);
    /* through a symlink out of the share: the walk stops at the symlink */
    static const char *const out[] = {"abs", "secret"};
    GUEST_ASSERT_EQ(walk(0, 9, 2, out), 0);
    GUEST_ASSERT_EQ(get16(), 1);
    GUEST_ASSERT_EQ(get8(), 0x02);
    static const char *const slash[] = {"abs/secret"};
    GUEST_ASSERT(walk(0, 9, 1, slash) != 0); /* EINVAL here, ENOENT from QEMU */
    static const char *const abs[] = {"abs"};
    GUEST_ASSERT_EQ(walk(0, 9, 1, abs), 0);
    begin(P9_TREADLINK);
    put32(9);
    GUEST_ASSERT_EQ(rpc(), 0);
    GUEST_ASSERT(get16() > 1);
    begin(P9_TLOPEN);
    put32(9);
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 40); /* ELOOP: never opened on the host */
    clunk(9);
}

static void files(void)
{
    static const char *const hello[] = {"hello.txt"};
    GUEST_ASSERT_EQ(walk(0, 1, 1, hello), 0);
    begin(P9_TGETATTR);
    put32(1);
    put64(0x7ff);
    GUEST_ASSERT_EQ(rpc(), 0);
    (void)get64();
    (void)qid(NULL);
    uint32_t mode = get32();
    GUEST_ASSERT_EQ(mode & 0170000, 0100000);
    rep_at += 4 + 4 + 8 + 8; /* uid gid nlink rdev */
    GUEST_ASSERT_EQ(get64(), 20);
    lopen(1, 0);
    uint8_t *data;
    GUEST_ASSERT_EQ(read_at(1, 0, 100, &data), 20);
    GUEST_ASSERT(!memcmp(data, "hello from the host\n", 20));
    clunk(1);
    /* create, write 64 KiB, fsync, chmod, truncate */
    GUEST_ASSERT_EQ(walk(0, 2, 0, NULL), 0);
    begin(P9_TLCREATE);
    put32(2);
    puts9("guest.bin");
    put32(2); /* O_RDWR */
    put32(0600);
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 0);
    for (uint32_t off = 0; off < 65536; off += 16384) {
        begin(P9_TWRITE);
        put32(2);
        put64(off);
        put32(16384);
        for (uint32_t i = 0; i < 16384; i++)
            put8((uint8_t)((off + i) * 13));
        GUEST_ASSERT_EQ(rpc(), 0);
        GUEST_ASSERT_EQ(get32(), 16384);
    }
    begin(P9_TFSYNC);
    put32(2);
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 0);
    begin(P9_TSETATTR);
    put32(2);
    put32(0x1); /* mode */
    put32(0640);
    put32(0);
    put32(0);
    for (int i = 0; i < 5; i++)
        put64(0);
    GUEST_ASSERT_EQ(rpc(), 0);
    /* an xattr on it */
    begin(P9_TXATTRCREATE);
    put32(2);
    puts9("user.guest");
    put64(5);
    put32(0);
    GUEST_ASSERT(rpc() != 0); /* EBUSY: the fid is open */
    static const char *const bin[] = {"guest.bin"};
    GUEST_ASSERT_EQ(walk(0, 3, 1, bin), 0);
    begin(P9_TXATTRCREATE);
    put32(3);
    puts9("user.guest");
    put64(5);
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 0);
    begin(P9_TWRITE);
    put32(3);
    put64(0);
    put32(5);
    put("ring3", 5);
    GUEST_ASSERT_EQ(rpc(), 0);
    clunk(3);
    GUEST_ASSERT_EQ(walk(0, 3, 1, bin), 0);
    begin(P9_TXATTRWALK);
    put32(3);
    put32(4);
    puts9("user.guest");
    GUEST_ASSERT_EQ(rpc(), 0);
    GUEST_ASSERT_EQ(get64(), 5);
    GUEST_ASSERT_EQ(read_at(4, 0, 64, &data), 5);
    GUEST_ASSERT(!memcmp(data, "ring3", 5));
    clunk(4);
    /* a hard link, a rename, a directory, a symlink, a FIFO */
    begin(P9_TLINK);
    put32(0);
    put32(3);
    puts9("hard.bin");
    GUEST_ASSERT_EQ(rpc(), 0);
    begin(P9_TMKDIR);
    put32(0);
    puts9("dir");
    put32(0755);
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 0);
    begin(P9_TRENAMEAT);
    put32(0);
    puts9("hard.bin");
    put32(0);
    puts9("renamed.bin");
    GUEST_ASSERT_EQ(rpc(), 0);
    begin(P9_TSYMLINK);
    put32(0);
    puts9("glink");
    puts9("../elsewhere");
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 0);
    begin(P9_TMKNOD);
    put32(0);
    puts9("gfifo");
    put32(0010600);
    put32(0);
    put32(0);
    put32(0);
    uint32_t e = rpc();
    GUEST_ASSERT(e == 0 || guest_cmdline_u64("p9.qemu", 0)); /* QEMU's answers ENXIO */
    begin(P9_TUNLINKAT);
    put32(0);
    puts9("doomed");
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 0);
    begin(P9_TLOCK);
    put32(2);
    put8(1);
    put32(0);
    put64(0);
    put64(0);
    put32(1);
    puts9("ring3");
    GUEST_ASSERT_EQ(rpc(), 0);
    GUEST_ASSERT_EQ(get8(), 0);
    begin(P9_TGETLOCK);
    put32(2);
    put8(1);
    put64(0);
    put64(0);
    put32(1);
    puts9("ring3");
    GUEST_ASSERT_EQ(rpc(), 0);
    GUEST_ASSERT_EQ(get8(), 2);
    clunk(2);
    clunk(3);
}

static void directory(void)
{
    GUEST_ASSERT_EQ(walk(0, 5, 0, NULL), 0);
    lopen(5, 0200000);
    unsigned names = 0;
    uint64_t off = 0;
    for (;;) {
        begin(P9_TREADDIR);
        put32(5);
        put64(off);
        put32(4096);
        GUEST_ASSERT_EQ(rpc(), 0);
        uint32_t count = get32(), end = rep_at + count;
        if (!count)
            break;
        while (rep_at < end) {
            (void)qid(NULL);
            off = get64();
            (void)get8();
            rep_at += get16();
            names++;
        }
    }
    guest_printf("p9: readdir %u names\n", names);
    GUEST_ASSERT(names >= 10);
    clunk(5);
    begin(P9_TSTATFS);
    put32(0);
    GUEST_ASSERT_EQ(rpc(), 0);
    /* refused: a size that lies (QEMU drops such a request unanswered), an unknown type;
     * Tflush is answered */
    if (!guest_cmdline_u64("p9.qemu", 0)) {
        begin(P9_TCLUNK);
        put32(0);
        uint32_t lie = 100;
        memcpy(req, &lie, 4);
        struct gbuf b[2] = {{req, 7}, {rep, MSIZE}};
        GUEST_ASSERT(gvirtq_add(&q, b, 1, 1) >= 0);
        gvirtq_kick(&q);
        uint16_t head;
        uint32_t len;
        GUEST_ASSERT(gvirtq_wait_used(&q, &head, &len, 10000));
        GUEST_ASSERT_EQ(rep[4], P9_RLERROR);
    }
    begin(99);
    GUEST_ASSERT_EQ(rpc(), 95); /* EOPNOTSUPP */
    begin(P9_TFLUSH);
    put16(3);
    GUEST_ASSERT_EQ(rpc(), 0);
}

/* Reads big.bin `rounds` times in msize-sized Treads: TSC cycles per MiB. */
static void bench(uint64_t rounds)
{
    static const char *const big[] = {"big.bin"};
    GUEST_ASSERT_EQ(walk(0, 6, 1, big), 0);
    lopen(6, 0);
    uint64_t bytes = 0, t0 = rdtsc();
    for (uint64_t r = 0; r < rounds; r++) {
        uint64_t off = 0;
        uint8_t *data;
        uint32_t n;
        while ((n = read_at(6, off, MSIZE - 11, &data)) > 0)
            off += n, bytes += n;
    }
    uint64_t cycles = rdtsc() - t0;
    guest_printf("p9: bench read %lu MiB, %lu cycles per MiB\n", (unsigned long)(bytes >> 20),
                 (unsigned long)(cycles / (bytes >> 20 ? bytes >> 20 : 1)));
    clunk(6);
}

static void clone_case(uint64_t ms)
{
    guest_printf("p9: ready\n");
    for (uint64_t i = 0; i < ms; i++)
        guest_udelay(1000); /* a restore under PVM sees the host's TSC: the wait is over */
    attach();
    static const char *const hello[] = {"hello.txt"};
    GUEST_ASSERT_EQ(walk(0, 1, 1, hello), 0);
    lopen(1, 0);
    uint8_t *data;
    uint32_t n = read_at(1, 0, 200, &data);
    char line[201];
    uint32_t k = 0;
    while (k < n && data[k] != '\n')
        line[k] = (char)data[k], k++;
    line[k] = 0;
    guest_printf("p9: hello %s\n", line);
    static const char *const none[] = {"x"};
    GUEST_ASSERT_EQ(walk(0, 2, 0, none), 0); /* a fid of the root to create in */
    begin(P9_TLCREATE);
    put32(2);
    puts9("made.txt");
    put32(01 | 0100); /* O_WRONLY | O_CREAT */
    put32(0644);
    put32(0);
    guest_printf("p9: create %u\n", (unsigned)rpc());
    for (;;)
        guest_udelay(10000);
}

void guest_main(void)
{
    struct gvirtio_dev d;
    GUEST_ASSERT(gvirtio_find(VIRTIO_ID_9P, 0, &d));
    GUEST_ASSERT(gvirtio_init(&d, 1)); /* VIRTIO_9P_MOUNT_TAG */
    GUEST_ASSERT(d.features & 1);
    uint16_t tag_len = gvirtio_config16(&d, 0);
    GUEST_ASSERT(tag_len > 0 && tag_len < 32);
    char tag[32];
    for (unsigned i = 0; i < tag_len; i++)
        tag[i] = (char)gvirtio_config8(&d, 2 + i);
    tag[tag_len] = 0;
    GUEST_ASSERT(gvirtq_setup(&d, &q, 0, 16));
    gvirtio_driver_ok(&d);
    req = gvirtio_alloc(MSIZE, 4096);
    rep = gvirtio_alloc(MSIZE, 4096);
    uint64_t clone_ms = guest_cmdline_u64("p9.clone", 0);
    if (clone_ms)
        clone_case(clone_ms);
    session();
    files();
    directory();
    uint64_t rounds = guest_cmdline_u64("p9.bench", 0);
    if (rounds)
        bench(rounds);
    guest_printf("p9: ok tag %s\n", tag);
    while (guest_cmdline_u64("p9.hold", 0)) /* for the host's API calls (a snapshot refused) */
        guest_udelay(10000);
}
