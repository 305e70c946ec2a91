/* wisp-9p-helper: the guest side of tests/kernel/p9_test.py, run by wisp-init from a root file
 * system that is itself a virtio-9p share. Static, one process (each exec costs seconds under
 * PVM's emulated kernel): it checks that / is 9p, mounts the data share (tag "data") and the
 * read-only share (tag "ro"), runs every check and prints one line per check,
 *   wisp-9p: NAME ok [detail]      or      wisp-9p: NAME FAIL what
 * then "wisp-9p: done N" and exits with N, the number of failures.
 *   wisp-9p-helper OUTSIDE_DIR MSIZE
 * OUTSIDE_DIR is the host's directory beside the share that holds "secret": no path the guest
 * can name may reach it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define D  "/mnt/data"
#define RO "/mnt/ro"

static int failures;

static void report(const char *name, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(const char *name, int ok, const char *fmt, ...)
{
    char detail[512] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    printf("wisp-9p: %s %s %s\n", name, ok ? "ok" : "FAIL", detail);
    fflush(stdout);
    if (!ok)
        failures++;
}

static int read_file(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, len - 1);
    int e = errno;
    close(fd);
    if (n < 0)
        return -e;
    buf[n] = 0;
    return (int)n;
}

static void check_root(void)
{
    char buf[4096];
    int n = read_file("/proc/mounts", buf, sizeof(buf));
    report("rootfs", n > 0 && strstr(buf, "root / 9p "), "%s",
           n > 0 ? strtok(buf, "\n") : strerror(-n));
}

static void mount_shares(const char *msize)
{
    char opts[128];
    snprintf(opts, sizeof(opts), "trans=virtio,version=9p2000.L,msize=%s", msize);
    mkdir("/mnt", 0755);
    mkdir(D, 0755);
    mkdir(RO, 0755);
    int a = mount("data", D, "9p", 0, opts);
    report("mount-data", a == 0, "%s", a ? strerror(errno) : opts);
    int b = mount("ro", RO, "9p", 0, opts);
    report("mount-ro", b == 0, "%s", b ? strerror(errno) : "");
}

/* ".." of the share's root is the guest's /mnt (the guest's own resolution), and the server
 * shows the root's ".." entry as the root itself. */
static void check_dotdot(void)
{
    struct stat up, mnt, root;
    int ok = stat(D "/..", &up) == 0 && stat("/mnt", &mnt) == 0 && stat(D, &root) == 0 &&
             up.st_ino == mnt.st_ino && up.st_dev == mnt.st_dev;
    report("dotdot-guest", ok, "%s", "");
    DIR *d = opendir(D);
    unsigned long long dotdot = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strcmp(e->d_name, ".."))
            dotdot = e->d_ino;
    if (d)
        closedir(d);
    report("dotdot-server", dotdot && dotdot == (unsigned long long)root.st_ino,
           "root ino %llu, its '..' entry %llu", (unsigned long long)root.st_ino, dotdot);
}

static int try_secret(const char *path)
{
    char buf[64];
    int n = read_file(path, buf, sizeof(buf));
    return n > 0 && strstr(buf, "SECRET") ? 1 : 0;
}

static void check_symlinks(const char *outside)
{
    char target[4096], path[4096];
    ssize_t n = readlink(D "/abs", target, sizeof(target) - 1);
    if (n >= 0)
        target[n] = 0;
    report("symlink-read", n > 0 && !strcmp(target, outside), "abs -> %s",
           n >= 0 ? target : strerror(errno));
    report("symlink-abs", !try_secret(D "/abs/secret"), "abs/secret not readable");
    report("symlink-rel", !try_secret(D "/rel/secret"), "rel/secret not readable");
    snprintf(path, sizeof(path), D "/rootlink%s/secret", outside);
    report("symlink-root", !try_secret(path), "rootlink (-> /) + the host path");
}

/* The host swaps race/d between a directory and a symlink to "/" while this walks it. */
static void check_race(const char *outside)
{
    char secret[4096];
    snprintf(secret, sizeof(secret), D "/race/d%s/secret", outside);
    unsigned escaped = 0, inside = 0, links = 0, i;
    /* until both states were seen a few times (the guest is slow under load), at most 60 s */
    time_t end = time(NULL) + 60;
    for (i = 0; i < 4000 && time(NULL) < end && (i < 8 || !inside || !links); i++) {
        escaped += (unsigned)try_secret(secret);
        char buf[64];
        if (read_file(D "/race/d/inside", buf, sizeof(buf)) > 0)
            inside++;
        struct stat st;
        if (lstat(D "/race/d", &st) == 0 && S_ISLNK(st.st_mode))
            links++;
    }
    report("race", escaped == 0 && inside > 0 && links > 0,
           "%u rounds: outside reached %u, inside read %u, symlink seen %u", i, escaped, inside,
           links);
}

static void check_contents(void)
{
    char buf[256];
    int n = read_file(D "/hello.txt", buf, sizeof(buf));
    report("read", n > 0 && !strcmp(buf, "hello from the host\n"), "%d bytes", n);
    static unsigned char block[65536];
    int fd = open(D "/guest.txt", O_CREAT | O_EXCL | O_RDWR, 0600);
    int ok = fd >= 0;
    for (int b = 0; ok && b < 16; b++) {
        for (unsigned j = 0; j < sizeof(block); j++)
            block[j] = (unsigned char)((b * 65536 + j) * 7);
        ok = write(fd, block, sizeof(block)) == (ssize_t)sizeof(block);
    }
    ok = ok && ftruncate(fd, 1000000) == 0 && fsync(fd) == 0;
    ok = ok && pread(fd, block, 4096, 65536) == 4096 && block[1] == (unsigned char)(65537 * 7);
    if (fd >= 0)
        close(fd);
    report("write", ok, "guest.txt: 1 MiB written, cut to 1000000 bytes");
}

static void check_attrs(void)
{
    struct stat st;
    int ok = stat(D "/hello.txt", &st) == 0;
    report("mode-host", ok && (st.st_mode & 07777) == 0751, "%o", ok ? st.st_mode & 07777 : 0);
    report("owner-host", ok && st.st_uid == 4321 && st.st_gid == 8765, "%u:%u", ok ? st.st_uid : 0,
           ok ? st.st_gid : 0);
    int c = chmod(D "/guest.txt", 0640);
    report("chmod", c == 0, "%s", c ? strerror(errno) : "");
    c = chown(D "/guest.txt", 1234, 5678);
    report("chown", c == 0, "%s", c ? strerror(errno) : "");
    char v[64];
    ssize_t n = getxattr(D "/hello.txt", "user.host", v, sizeof(v) - 1);
    if (n >= 0)
        v[n] = 0;
    report("xattr-host", n > 0 && !strcmp(v, "from-host"), "%s", n >= 0 ? v : strerror(errno));
    int r = setxattr(D "/guest.txt", "user.wisp", "guest-value", 11, 0);
    report("xattr-set", r == 0, "%s", r ? strerror(errno) : "");
    char list[256];
    n = listxattr(D "/guest.txt", list, sizeof(list));
    int found = 0;
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1)
        found |= !strcmp(list + i, "user.wisp");
    report("xattr-list", found, "%zd bytes", n);
    r = setxattr(D "/guest.txt", "user.tmp", "x", 1, 0) ||
        removexattr(D "/guest.txt", "user.tmp") ||
        getxattr(D "/guest.txt", "user.tmp", v, sizeof(v)) >= 0 || errno != ENODATA;
    report("xattr-remove", !r, "%s", "");
    r = setxattr(D "/guest.txt", "trusted.wisp", "x", 1, 0);
    report("xattr-trusted", r < 0, "refused: %s", r < 0 ? strerror(errno) : "no");
}

static void check_readdir(void)
{
    static unsigned char seen[2000];
    DIR *d = opendir(D "/big");
    unsigned count = 0, named = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        count++;
        unsigned k;
        if (sscanf(e->d_name, "f%4u", &k) == 1 && k < 2000 && !seen[k]++)
            named++;
    }
    if (d)
        closedir(d);
    report("readdir", count == 2000 && named == 2000, "%u entries, %u distinct", count, named);
}

static void check_changes(void)
{
    int ok = mkdir(D "/newdir", 0750) == 0 &&
             rename(D "/guest.txt", D "/newdir/renamed.txt") == 0 &&
             access(D "/guest.txt", F_OK) < 0 && access(D "/newdir/renamed.txt", F_OK) == 0;
    report("rename", ok, "%s", ok ? "" : strerror(errno));
    ok = unlink(D "/doomed") == 0 && rmdir(D "/doomdir") == 0 && access(D "/doomed", F_OK) < 0;
    report("unlink", ok, "%s", ok ? "" : strerror(errno));
    struct stat a, b;
    ok = link(D "/newdir/renamed.txt", D "/hard.txt") == 0 && stat(D "/hard.txt", &a) == 0 &&
         stat(D "/newdir/renamed.txt", &b) == 0 && a.st_ino == b.st_ino && a.st_nlink == 2;
    report("link-guest", ok, "%s", ok ? "" : strerror(errno));
    ok = stat(D "/hl1", &a) == 0 && stat(D "/hl2", &b) == 0 && a.st_ino == b.st_ino &&
         a.st_nlink == 2;
    report("link-host", ok, "%s", "");
    ok = symlink("../somewhere", D "/glink") == 0 && mkfifo(D "/gfifo", 0600) == 0;
    report("symlink-mkfifo", ok, "%s", ok ? "" : strerror(errno));
}

static void check_ro(void)
{
    char buf[64];
    report("ro-read", read_file(RO "/ro.txt", buf, sizeof(buf)) > 0, "%s", "");
    int fd = open(RO "/new", O_CREAT | O_WRONLY, 0600);
    report("ro-create", fd < 0 && errno == EROFS, "%s", fd < 0 ? strerror(errno) : "created");
    int r = mkdir(RO "/dir", 0700);
    report("ro-mkdir", r < 0 && errno == EROFS, "%s", r < 0 ? strerror(errno) : "made");
    r = chmod(RO "/ro.txt", 0777);
    report("ro-chmod", r < 0 && errno == EROFS, "%s", r < 0 ? strerror(errno) : "changed");
    fd = open(RO "/ro.txt", O_WRONLY);
    report("ro-write", fd < 0 && errno == EROFS, "%s", fd < 0 ? strerror(errno) : "opened");
    r = unlink(RO "/ro.txt");
    report("ro-unlink", r < 0 && errno == EROFS, "%s", r < 0 ? strerror(errno) : "removed");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s OUTSIDE_DIR MSIZE\n", argv[0]);
        return 2;
    }
    check_root();
    mount_shares(argv[2]);
    check_dotdot();
    check_symlinks(argv[1]);
    check_race(argv[1]);
    check_contents();
    check_attrs();
    check_readdir();
    check_changes();
    check_ro();
    sync();
    umount(D);
    umount(RO);
    printf("wisp-9p: done %d\n", failures);
    return failures;
}
