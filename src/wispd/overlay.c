/* Clones of a VM with writable drives (docs/wispd.md, "Snapshots and clones"): while the source
 * is paused after its snapshot, each writable image is copied once into the snapshot's
 * directory (`backing-ID`: the disk as the snapshot saw it, which the source goes on changing
 * after its resume), and every clone gets a qcow2 overlay of its own on that copy
 * (`NAME.ID.qcow2`, backing file "backing-ID", relative: it resolves beside the overlay on the
 * host and in a jail, where wispd puts both at /drive-ID and /backing-ID). The copies and the
 * overlays are made by a child process (copy_file_range of the data extents, fsynced; `wisp-img
 * create -f qcow2 -b backing-ID` for each overlay), whose end a pidfd on the loop reports: the
 * loop never waits for the disk. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/evloop.h"
#include "overlay.h"
#include "wispd.h"

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* A drive id that can be part of a file name: [A-Za-z0-9_.-], 1-32 bytes, not starting with
 * a dot. */
static bool id_ok(const char *id)
{
    size_t n = strlen(id);
    if (!n || n > 32 || id[0] == '.')
        return false;
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-' || *c == '.'))
            return false;
    return true;
}

/* The image's format and virtual size from its first bytes: qcow2 (its header's size; one with
 * a backing file of its own is refused: the copy's backing name would not resolve) or raw. */
static int probe(const char *path, bool *qcow2, uint64_t *size, struct wisp_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s", path);
    unsigned char h[32] = {0};
    struct stat st;
    ssize_t n = pread(fd, h, sizeof(h), 0);
    int r = fstat(fd, &st) < 0 ? -errno : 0;
    close(fd);
    if (r < 0 || n < 0)
        return wisp_err_sys(err, r < 0 ? -r : errno, "%s", path);
    *qcow2 = n == (ssize_t)sizeof(h) && be64(h) >> 32 == QCOW2_MAGIC;
    *size = *qcow2 ? be64(h + 24) : (uint64_t)st.st_size;
    if (*qcow2 && be64(h + 8))
        return wisp_err_set(err, ENOTSUP,
                            "%s: a qcow2 image with a backing file of its own: clones of it are "
                            "not supported yet (flatten it: wisp-img convert)",
                            path);
    if (!*size)
        return wisp_err_set(err, EINVAL, "%s: an empty image", path);
    return 0;
}

int overlay_check(const struct vm *vm, unsigned *nr_writable, struct wisp_err *err)
{
    json_t *item;
    size_t i;
    *nr_writable = 0;
    json_array_foreach(json_object_get(vm->def, "drives"), i, item)
    {
        if (json_is_true(json_object_get(item, "read_only")))
            continue;
        const char *id = json_string_value(json_object_get(item, "id"));
        bool q;
        uint64_t size;
        if (!id_ok(id))
            return wisp_err_set(err, EINVAL,
                                "clone: %s: drive '%s': a writable drive's id names its clones' "
                                "overlays: letters, digits, '_', '-', '.', at most 32 bytes",
                                vm->name, id);
        int r = probe(json_string_value(json_object_get(item, "path")), &q, &size, err);
        if (r < 0)
            return r;
        ++*nr_writable;
    }
    return 0;
}

void overlay_paths(const char *dir, const char *clone, const char *id, char *overlay, char *backing,
                   size_t size)
{
    snprintf(overlay, size, "%s/%s.%s.qcow2", dir, clone, id);
    snprintf(backing, size, "%s/backing-%s", dir, id);
}

/* Copies src to dst, only its data extents (holes stay holes), then fsyncs dst. */
static int copy_sparse(const char *src, const char *dst, struct wisp_err *err)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return wisp_err_sys(err, errno, "%s", src);
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (out < 0) {
        int e = errno;
        close(in);
        return wisp_err_sys(err, e, "%s", dst);
    }
    struct stat st;
    int r = fstat(in, &st) < 0 || ftruncate(out, st.st_size) < 0 ? -errno : 0;
    off_t pos = 0;
    while (r == 0 && pos < st.st_size) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0) {
            r = errno == ENXIO ? 0 : -errno; /* no data after pos */
            break;
        }
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0) {
            r = -errno;
            break;
        }
        off_t ip = data, op = data;
        while (r == 0 && ip < hole) {
            ssize_t n = copy_file_range(in, &ip, out, &op, (size_t)(hole - ip), 0);
            if (n < 0)
                r = -errno;
            else if (n == 0)
                break;
        }
        pos = hole;
    }
    if (r == 0 && fsync(out) < 0)
        r = -errno;
    close(in);
    if (close(out) < 0 && r == 0)
        r = -errno;
    if (r < 0) {
        unlink(dst);
        return wisp_err_sys(err, -r, "copying %s to %s", src, dst);
    }
    return 0;
}

/* wisp-img create -q -f qcow2 -b REL -F FMT -u OVERLAY SIZE, waited for. */
static int img_create(const char *img, const char *overlay, const char *rel, const char *fmt,
                      uint64_t size, struct wisp_err *err)
{
    char sz[32];
    snprintf(sz, sizeof(sz), "%llu", (unsigned long long)size);
    int pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0)
            dup2(null, 1);
        execl(img, "wisp-img", "create", "-q", "-f", "qcow2", "-b", rel, "-F", fmt, "-u", overlay,
              sz, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0)
        return wisp_err_sys(err, errno, "%s", img);
    if (!WIFEXITED(st) || WEXITSTATUS(st))
        return wisp_err_set(err, EIO,
                            "%s create %s: exit status %d (its message is in wispd's log)", img,
                            overlay, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    return 0;
}

/* The child's work: the copies, then every clone's overlays, owned by the jail's ids when the
 * clones run jailed. */
static int freeze(const struct overlay_job *j, struct wisp_err *err)
{
    json_t *item;
    size_t i;
    char overlay[PATH_MAX], backing[PATH_MAX];
    json_array_foreach(json_object_get(j->def, "drives"), i, item)
    {
        if (json_is_true(json_object_get(item, "read_only")))
            continue;
        const char *id = json_string_value(json_object_get(item, "id"));
        const char *src = json_string_value(json_object_get(item, "path"));
        bool q;
        uint64_t size;
        overlay_paths(j->dir, "", id, overlay, backing, sizeof(backing));
        int r = probe(src, &q, &size, err);
        if (r == 0)
            r = copy_sparse(src, backing, err);
        if (r == 0 && j->chown && chown(backing, j->uid, j->gid) < 0)
            r = wisp_err_sys(err, errno, "chown %s", backing);
        for (unsigned k = 1; r == 0 && k <= j->count; k++) {
            char name[160], rel[64];
            snprintf(name, sizeof(name), "%s-%u", j->prefix, k);
            overlay_paths(j->dir, name, id, overlay, backing, sizeof(backing));
            snprintf(rel, sizeof(rel), "backing-%s", id);
            r = img_create(j->img, overlay, rel, q ? "qcow2" : "raw", size, err);
            if (r == 0 && j->chown && chown(overlay, j->uid, j->gid) < 0)
                r = wisp_err_sys(err, errno, "chown %s", overlay);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

static void child_ended(void *opaque, uint32_t events)
{
    struct overlay_job *j = opaque;
    siginfo_t si = {0};
    waitid(P_PIDFD, (id_t)j->pidfd, &si, WEXITED);
    char msg[512] = "";
    ssize_t n = read(j->msg_fd, msg, sizeof(msg) - 1);
    msg[n > 0 ? n : 0] = '\0';
    evloop_source_remove(j->src);
    close(j->pidfd);
    close(j->msg_fd);
    bool ok = si.si_code == CLD_EXITED && si.si_status == 0;
    if (!ok && !msg[0])
        snprintf(msg, sizeof(msg), "the overlays' maker ended with status %d", si.si_status);
    j->done(j, ok, msg);
}

int overlay_job_start(struct wispd *d, struct overlay_job *j, struct wisp_err *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        return wisp_err_sys(err, errno, "pipe");
    int pid = fork();
    if (pid == 0) {
        struct wisp_err e = {0};
        close(p[0]);
        if (freeze(j, &e) < 0) {
            if (write(p[1], e.msg, strlen(e.msg)) < 0) {
            }
            _exit(1);
        }
        _exit(0);
    }
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        return wisp_err_sys(err, errno, "fork");
    }
    j->msg_fd = p[0];
    j->pidfd = pidfd_open(pid, 0);
    int r = j->pidfd < 0 ? wisp_err_sys(err, errno, "pidfd_open")
                         : evloop_add_fd(d->loop, j->pidfd, EPOLLIN, child_ended, j, &j->src, err);
    if (r < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (j->pidfd >= 0)
            close(j->pidfd);
        close(p[0]);
    }
    return r;
}

void overlay_vm_removed(struct wispd *d, const struct vm *vm)
{
    json_t *item;
    size_t i;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s/snapshots/", d->state_dir);
    json_array_foreach(json_object_get(vm->def, "drives"), i, item)
    {
        const char *path = json_string_value(json_object_get(item, "path"));
        if (json_object_get(item, "backing") && path && !strncmp(path, dir, strlen(dir)))
            unlink(path); /* a clone's own overlay; its backing copy stays with the snapshot */
    }
}
