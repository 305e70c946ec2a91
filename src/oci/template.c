/* VM templates (docs/oci.md, "Templates"): the first container of a guest configuration boots,
 * and as soon as its agent answers (before the agent mounts the container's root: the share has
 * no fid yet) its VM is paused, snapshotted into the cache directory and resumed; every later
 * container start of that configuration restores the snapshot (wisp-vmm's PUT /snapshot/load
 * with the container's own rootfs share and vsock socket) instead of booting.
 *
 * The cache: <cache_dir>/<key>/ holds `state` and `mem` (wisp-vmm's snapshot) and
 * `template.json` (the identity the key was made of, and the files' sizes); <key>.lock is the
 * flock that makes finding, building and discarding a template one at a time (a second create
 * of the same configuration waits for the first's build, then uses it). A template is used only
 * when its identity is this configuration's exactly and its files have the sizes it recorded;
 * one that fails to load is moved away, and the container boots (and becomes the new one). Files of
 * a discarded template are unlinked, never rewritten: the VMs restored from them keep their
 * mappings. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/io.h"
#include "oci.h"
#include "spec.h"
#include "template.h"
#include "vm.h"
#include "wisp-config.h"

#define TEMPLATE_FORMAT 1                /* the layout of a template directory */
#define TPATH           (PATH_MAX + 256) /* a path in a template's directory */

/* A file's identity: a rebuilt kernel, initramfs or wisp-vmm is another file. */
static int file_identity(const char *what, const char *path, char *buf, size_t len,
                         struct wisp_err *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return wisp_err_sys(err, errno, "template: %s %s", what, path);
    snprintf(buf, len, "%s=%s dev=%llu ino=%llu size=%lld mtime=%lld.%09ld ctime=%lld.%09ld", what,
             path, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
             (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
             (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec);
    return 0;
}

int oci_template_identity(struct oci_template *t, const struct oci_guest *g, unsigned mem_mib,
                          unsigned vcpus, const char *cmdline, struct wisp_err *err)
{
    char k[PATH_MAX + 160], i[PATH_MAX + 160], v[PATH_MAX + 160];
    uint64_t h = 1469598103934665603ull; /* FNV-1a: the name; the identity itself is compared */
    int r;

    memset(t, 0, sizeof(*t));
    t->lock_fd = -1;
    t->g = g;
    t->mem_mib = mem_mib;
    t->vcpus = vcpus;
    t->cmdline = cmdline;
    if ((r = file_identity("kernel", g->kernel, k, sizeof(k), err)) < 0 ||
        (r = file_identity("initramfs", g->initramfs, i, sizeof(i), err)) < 0 ||
        (r = file_identity("vmm", g->vmm, v, sizeof(v), err)) < 0)
        return r;
    snprintf(t->identity, sizeof(t->identity),
             "format=%d wisp-oci=%s\n%s\n%s\n%s\nmemory_mib=%u vcpus=%u\ncmdline=%s",
             TEMPLATE_FORMAT, WISP_VERSION, k, i, v, mem_mib, vcpus, cmdline);
    for (const char *p = t->identity; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    snprintf(t->dir, sizeof(t->dir), "%s/%016llx", g->cache_dir, (unsigned long long)h);
    snprintf(t->state, sizeof(t->state), "%s/state", t->dir);
    snprintf(t->mem, sizeof(t->mem), "%s/mem", t->dir);
    return 0;
}

static off_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? st.st_size : -1;
}

/* Whether t->dir holds this identity's complete template (else why not, for the log). */
static bool usable(const struct oci_template *t, const char **why)
{
    char path[TPATH];
    struct wisp_err err;
    json_t *j;
    bool ok;

    snprintf(path, sizeof(path), "%s/template.json", t->dir);
    if (access(path, F_OK) < 0) {
        *why = "none yet";
        return false;
    }
    j = oci_load_json_file(path, &err);
    ok = j && json_is_string(json_object_get(j, "identity")) &&
         !strcmp(json_string_value(json_object_get(j, "identity")), t->identity);
    if (!ok)
        *why = j ? "another identity (kernel, initramfs, wisp-vmm or sizes)" : "unreadable";
    if (ok && (file_size(t->state) != json_integer_value(json_object_get(j, "state_bytes")) ||
               file_size(t->mem) != json_integer_value(json_object_get(j, "mem_bytes")) ||
               file_size(t->mem) != (off_t)t->mem_mib << 20)) {
        *why = "its files have other sizes than it recorded (damaged)";
        ok = false;
    }
    json_decref(j);
    return ok;
}

/* Moves a template directory aside and removes it (its files stay for the VMs mapping them). */
static void discard(const char *dir)
{
    char aside[PATH_MAX + 128], path[TPATH];
    static const char *const names[] = {"template.json", "state", "mem", NULL};

    snprintf(aside, sizeof(aside), "%s.stale-%d-%lld", dir, (int)getpid(), (long long)time(NULL));
    if (rename(dir, aside) < 0)
        snprintf(aside, sizeof(aside), "%s", dir);
    for (int i = 0; names[i]; i++) {
        snprintf(path, sizeof(path), "%s/%s", aside, names[i]);
        unlink(path);
    }
    rmdir(aside);
}

/* Whether a recorded identity's files (its kernel=, initramfs= and vmm= lines) are still
 * those files: a template of a rebuilt wisp-vmm or kernel can never be used again. */
static bool still_current(const char *identity)
{
    static const char *const what[] = {"kernel", "initramfs", "vmm"};
    char line[PATH_MAX + 160], now[PATH_MAX + 160], key[16];

    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof(key), "\n%s=", what[i]);
        const char *p = strstr(identity, key), *end, *dev;
        if (!p)
            return false;
        p++;
        end = strchr(p, '\n');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n >= sizeof(line))
            return false;
        memcpy(line, p, n);
        line[n] = 0;
        if (!(dev = strstr(line, " dev=")))
            return false;
        char path[PATH_MAX];
        size_t plen = (size_t)(dev - line) - strlen(what[i]) - 1;
        if (plen >= sizeof(path))
            return false;
        memcpy(path, line + strlen(what[i]) + 1, plen);
        path[plen] = 0;
        struct wisp_err err;
        if (file_identity(what[i], path, now, sizeof(now), &err) < 0 || strcmp(now, line))
            return false;
    }
    return true;
}

/* Removes the cache's templates whose files were rebuilt or removed (not locked by a build). */
static void prune(const struct oci_template *t)
{
    DIR *d = opendir(t->g->cache_dir);
    struct dirent *e;

    while (d && (e = readdir(d))) {
        char dir[PATH_MAX + 32], path[TPATH];
        if (strlen(e->d_name) != 16 || strspn(e->d_name, "0123456789abcdef") != 16)
            continue;
        snprintf(dir, sizeof(dir), "%s/%s", t->g->cache_dir, e->d_name);
        if (!strcmp(dir, t->dir))
            continue;
        snprintf(path, sizeof(path), "%s.lock", dir);
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        struct wisp_err err;
        snprintf(path, sizeof(path), "%s/template.json", dir);
        json_t *j = oci_load_json_file(path, &err);
        const char *id = json_string_value(json_object_get(j, "identity"));
        if (id && !still_current(id)) {
            oci_debug("template %s: its kernel, initramfs or wisp-vmm changed: removed", dir);
            discard(dir); /* its lock file stays: a waiter holds its inode */
        }
        json_decref(j);
        close(fd);
    }
    if (d)
        closedir(d);
}

#define JAIL_STATE "template.state" /* a jailed VMM's snapshot, in its root */
#define JAIL_MEM   "template.mem"

/* A jailed VMM's snapshot file out of its jail (root/name, the VMM's user's) into the cache:
 * a rename on one file system, else a copy; the jail's copy goes either way. */
static int move_out(const char *root, const char *name, const char *to, struct wisp_err *err)
{
    char from[TPATH];
    int r = 0;

    snprintf(from, sizeof(from), "%s/%s", root, name);
    if (rename(from, to) == 0)
        return 0;
    if (errno != EXDEV) {
        r = -errno;
    } else {
        cleanup_close int in = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        cleanup_close int out =
            in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        struct stat st;
        r = in < 0 || out < 0 || fstat(in, &st) < 0 ? -errno : 0;
        for (off_t left = r == 0 ? st.st_size : 0; left > 0;) {
            ssize_t n = copy_file_range(in, NULL, out, NULL, (size_t)left, 0);
            if (n <= 0) {
                r = n < 0 ? -errno : -EIO;
                break;
            }
            left -= n;
        }
    }
    unlink(from);
    if (r < 0 && err)
        wisp_err_sys(err, -r, "template: moving %s to %s", from, to);
    return r;
}

int oci_template_commit(struct oci_template *t, const char *api, const char *jail_root,
                        struct wisp_err *err)
{
    char tmp[PATH_MAX + 64], state[TPATH], mem[TPATH], path[TPATH];
    json_t *j;
    char *body;
    int r;

    snprintf(tmp, sizeof(tmp), "%s.tmp-%d", t->dir, (int)getpid());
    discard(tmp); /* a build of an earlier process with our pid that was killed */
    if (mkdir(tmp, 0700) < 0) {
        r = wisp_err_sys(err, errno, "template: %s", tmp);
        goto out;
    }
    snprintf(state, sizeof(state), "%s/state", tmp);
    snprintf(mem, sizeof(mem), "%s/mem", tmp);
    /* a jailed VMM writes into its own root (nothing of the cache is in its reach, before or
     * after: a template is every later container's guest), and the files are moved here */
    j = jail_root
            ? json_pack("{s:s,s:s}", "snapshot_path", "/" JAIL_STATE, "mem_file_path", "/" JAIL_MEM)
            : json_pack("{s:s,s:s}", "snapshot_path", state, "mem_file_path", mem);
    body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    r = body ? oci_vmm_api(api, "PATCH", "/vm", "{\"state\": \"Paused\"}", 10, err)
             : wisp_err_set(err, ENOMEM, "out of memory");
    if (r == 0) {
        r = oci_vmm_api(api, "PUT", "/snapshot/create", body, 120, err);
        struct wisp_err rerr;
        if (oci_vmm_api(api, "PATCH", "/vm", "{\"state\": \"Resumed\"}", 10, &rerr) < 0 && r == 0)
            r = wisp_err_set(err, EIO, "template: the VM did not resume: %s", rerr.msg);
    }
    free(body);
    if (jail_root) {
        int r1 = move_out(jail_root, JAIL_STATE, state, r == 0 ? err : NULL);
        int r2 = move_out(jail_root, JAIL_MEM, mem, r == 0 && r1 == 0 ? err : NULL);
        if (r == 0)
            r = r1 < 0 ? r1 : r2;
    }
    off_t state_bytes = file_size(state), mem_bytes = file_size(mem);
    if (r == 0 && (state_bytes <= 0 || mem_bytes != (off_t)t->mem_mib << 20))
        r = wisp_err_set(err, EIO, "template: wisp-vmm wrote no complete snapshot in %s", tmp);
    j = json_pack("{s:i,s:s,s:I,s:I}", "format", TEMPLATE_FORMAT, "identity", t->identity,
                  "state_bytes", (json_int_t)state_bytes, "mem_bytes", (json_int_t)mem_bytes);
    snprintf(path, sizeof(path), "%s/template.json", tmp);
    if (r == 0 && (!j || json_dump_file(j, path, JSON_COMPACT) < 0))
        r = wisp_err_sys(err, errno ? errno : EIO, "template: %s", path);
    json_decref(j);
    if (r == 0 && rename(tmp, t->dir) < 0)
        r = wisp_err_sys(err, errno, "template: rename %s to %s", tmp, t->dir);
    if (r < 0)
        discard(tmp);
    else
        oci_debug("template %s: made", t->dir);
    if (r == 0)
        prune(t);
out:
    oci_template_abandon(t);
    return r < 0 ? wisp_err_wrap(err, "template %s", t->dir) : 0;
}

void oci_template_abandon(struct oci_template *t)
{
    if (t->lock_fd > 0)
        close(t->lock_fd);
    t->lock_fd = -1;
}

static int lock_template(const struct oci_template *t, struct wisp_err *err)
{
    char path[TPATH];
    int fd;

    if (mkdir(t->g->cache_dir, 0700) < 0 && errno != EEXIST)
        return wisp_err_sys(err, errno, "template: the cache directory %s", t->g->cache_dir);
    snprintf(path, sizeof(path), "%s.lock", t->dir);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return wisp_err_sys(err, errno, "template: %s", path);
    if (flock(fd, LOCK_EX) < 0) {
        close(fd);
        return wisp_err_sys(err, errno, "template: lock %s", path);
    }
    return fd;
}

int oci_template_lookup(struct oci_template *t, struct wisp_err *err)
{
    const char *why = NULL;
    struct stat st;
    int fd = lock_template(t, err);

    if (fd < 0)
        return fd;
    if (usable(t, &why) && stat(t->state, &st) == 0) {
        t->state_ino = st.st_ino;
        close(fd); /* the files are complete: restores need no lock */
        return 1;
    }
    oci_debug("template %s: %s: this VM boots and becomes it", t->dir, why);
    if (access(t->dir, F_OK) == 0)
        discard(t->dir);
    t->lock_fd = fd; /* held until the boot is snapshotted or abandoned */
    return 0;
}

void oci_template_discard(const struct oci_template *t)
{
    struct wisp_err err;
    struct stat st;
    int fd = lock_template(t, &err);

    if (fd < 0)
        return;
    /* only the template that failed: another process may have rebuilt it meanwhile */
    if (stat(t->state, &st) == 0 && st.st_ino == t->state_ino) {
        oci_logf("warning", "template %s: it did not load: discarded", t->dir);
        discard(t->dir);
    }
    close(fd);
}
