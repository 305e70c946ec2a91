/* wisp-oci's state directories and the OCI state machine's status (docs/oci.md, "State"). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/io.h"
#include "oci.h"
#include "state.h"

int oci_container_dir(const char *id, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s", oci_g.root, id);
    return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

void oci_container_path(const struct oci_container *c, const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "/proc/self/fd/%d/%s", c->dirfd, name);
}

static int lock_dir(struct oci_container *c, struct wisp_err *err)
{
    c->lockfd = openat(c->dirfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (c->lockfd < 0)
        return wisp_err_sys(err, errno, "%s/%s/lock", oci_g.root, c->id);
    if (flock(c->lockfd, LOCK_EX) < 0)
        return wisp_err_sys(err, errno, "lock %s/%s", oci_g.root, c->id);
    return 0;
}

static int read_state(struct oci_container *c, struct wisp_err *err)
{
    cleanup_close int fd = openat(c->dirfd, "state.json", O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    json_error_t jerr;
    FILE *f;

    if (fd < 0)
        return errno == ENOENT ? -ENOENT : wisp_err_sys(err, errno, "state.json of %s", c->id);
    f = fdopen(steal_fd(&fd), "r");
    if (!f)
        return wisp_err_sys(err, errno, "state.json of %s", c->id);
    c->state = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!c->state || !json_is_object(c->state)) {
        json_decref(c->state);
        c->state = NULL;
        return wisp_err_set(err, EINVAL, "%s/%s/state.json: %s", oci_g.root, c->id,
                            jerr.text[0] ? jerr.text : "not a JSON object");
    }
    return 0;
}

int oci_container_open(const char *id, struct oci_container *c, struct wisp_err *err)
{
    char path[PATH_MAX];
    int r;

    memset(c, 0, sizeof(*c));
    c->dirfd = c->lockfd = -1;
    if (!oci_valid_id(id) || oci_container_dir(id, path, sizeof(path)) < 0)
        return -ENOENT;
    snprintf(c->id, sizeof(c->id), "%s", id);
    c->dirfd = open(path, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (c->dirfd < 0) {
        r = errno;
        oci_container_close(c);
        return r == ENOENT || r == ENOTDIR || r == ELOOP ? -ENOENT
                                                         : wisp_err_sys(err, r, "%s", path);
    }
    /* O_PATH fds cannot be flock()ed or read through openat's O_RDWR on some kernels: reopen. */
    close(c->dirfd);
    c->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (c->dirfd < 0) {
        r = errno;
        oci_container_close(c);
        return r == ENOENT ? -ENOENT : wisp_err_sys(err, r, "%s", path);
    }
    r = lock_dir(c, err);
    if (r == 0)
        r = read_state(c, err);
    if (r < 0 && r != -ENOENT) {
        oci_container_close(c);
        return r;
    }
    if (r == -ENOENT) {
        /* A directory without state.json: a create under way or one that died. Keep it open
         * (delete removes it) but say it does not exist. */
        return -ENOENT;
    }
    return 0;
}

/* mkdir -p (runc's MkdirAll of --root). */
static int mkdir_parents(const char *path)
{
    char p[PATH_MAX];

    if (snprintf(p, sizeof(p), "%s", path) >= (int)sizeof(p))
        return errno = ENAMETOOLONG, -1;
    for (char *s = p + 1;; s++) {
        char save = *s;
        if (save != '/' && save != 0)
            continue;
        *s = 0;
        if (mkdir(p, 0711) < 0 && errno != EEXIST)
            return -1;
        *s = save;
        if (!save)
            return 0;
    }
}

int oci_container_new(const char *id, struct oci_container *c, struct wisp_err *err)
{
    char path[PATH_MAX];

    memset(c, 0, sizeof(*c));
    c->dirfd = c->lockfd = -1;
    snprintf(c->id, sizeof(c->id), "%s", id);
    if (mkdir_parents(oci_g.root) < 0)
        return wisp_err_sys(err, errno, "cannot make the root %s", oci_g.root);
    if (oci_container_dir(id, path, sizeof(path)) < 0)
        return wisp_err_set(err, ENAMETOOLONG, "%s/%s: the path is too long", oci_g.root, id);
    if (mkdir(path, 0700) < 0)
        return errno == EEXIST ? -EEXIST : wisp_err_sys(err, errno, "mkdir %s", path);
    c->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (c->dirfd < 0)
        return wisp_err_sys(err, errno, "%s", path);
    return lock_dir(c, err);
}

int oci_container_save(struct oci_container *c, struct wisp_err *err)
{
    char tmp[64];
    cleanup_free char *text = json_dumps(c->state, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    cleanup_close int fd = -1;

    if (!text)
        return wisp_err_set(err, ENOMEM, "state.json of %s: cannot encode", c->id);
    snprintf(tmp, sizeof(tmp), "state.json.tmp-%d", (int)getpid());
    fd = openat(c->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return wisp_err_sys(err, errno, "%s/%s/%s", oci_g.root, c->id, tmp);
    if (wisp_write_all(fd, text, strlen(text)) < 0 || fsync(fd) < 0) {
        int e = errno;
        unlinkat(c->dirfd, tmp, 0);
        return wisp_err_sys(err, e, "write %s/%s/%s", oci_g.root, c->id, tmp);
    }
    if (renameat(c->dirfd, tmp, c->dirfd, "state.json") < 0) {
        int e = errno;
        unlinkat(c->dirfd, tmp, 0);
        return wisp_err_sys(err, e, "rename %s/%s/state.json", oci_g.root, c->id);
    }
    return 0;
}

void oci_container_close(struct oci_container *c)
{
    if (c->lockfd >= 0)
        close(c->lockfd);
    if (c->dirfd >= 0)
        close(c->dirfd);
    json_decref(c->state);
    c->state = NULL;
    c->lockfd = c->dirfd = -1;
}

/* Removes everything below dirfd (files, sockets, directories), never following a symlink. */
static int remove_below(int dirfd)
{
    DIR *d;
    struct dirent *e;
    int r = 0, fd = dup(dirfd);

    if (fd < 0)
        return -errno;
    d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    rewinddir(d);
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (unlinkat(dirfd, e->d_name, 0) == 0)
            continue;
        if (errno == EISDIR || errno == EPERM) {
            int sub = openat(dirfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub >= 0) {
                remove_below(sub);
                close(sub);
            }
            if (unlinkat(dirfd, e->d_name, AT_REMOVEDIR) == 0)
                continue;
        }
        r = -errno;
    }
    closedir(d);
    return r;
}

void oci_container_remove_subdir(const struct oci_container *c, const char *name)
{
    int fd = openat(c->dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0)
        return;
    remove_below(fd);
    close(fd);
    unlinkat(c->dirfd, name, AT_REMOVEDIR);
}

int oci_container_remove(struct oci_container *c, struct wisp_err *err)
{
    char path[PATH_MAX];
    int r = 0;

    oci_container_dir(c->id, path, sizeof(path));
    if (c->dirfd >= 0)
        remove_below(c->dirfd);
    if (rmdir(path) < 0 && errno != ENOENT)
        r = wisp_err_sys(err, errno, "cannot remove %s", path);
    oci_container_close(c);
    return r;
}

unsigned long long oci_proc_start_time(pid_t pid, bool *alive)
{
    char path[64], buf[1024], *p;
    unsigned long long start = 0;
    cleanup_close int fd = -1;
    ssize_t n;
    char state;

    *alive = false;
    if (pid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    if (!p || sscanf(p + 1,
                     " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                     "%*d %*d %llu",
                     &state, &start) != 2)
        return 0;
    *alive = state != 'Z' && state != 'X' && state != 'x';
    return start;
}

const char *oci_container_status(struct oci_container *c, pid_t *pid)
{
    json_int_t p = json_integer_value(json_object_get(c->state, "pid"));
    json_int_t start = json_integer_value(
        json_object_get(json_object_get(c->state, "wisp"), "monitor_start_time"));
    const char *status = json_string_value(json_object_get(c->state, "status"));
    bool alive;

    *pid = 0;
    if (!status || p <= 0 || p > INT_MAX)
        return "stopped";
    if (oci_proc_start_time((pid_t)p, &alive) != (unsigned long long)start || !alive)
        return "stopped";
    *pid = (pid_t)p;
    return status;
}

json_t *oci_container_public_state(struct oci_container *c)
{
    pid_t pid;
    const char *status = oci_container_status(c, &pid);
    json_t *s = c->state, *o = json_object();
    json_t *ann = json_object_get(s, "annotations");

    json_object_set_new(o, "ociVersion", json_string(OCI_SPEC_VERSION));
    json_object_set_new(o, "id", json_string(c->id));
    json_object_set_new(o, "pid", json_integer(pid));
    json_object_set_new(o, "status", json_string(status));
    json_object_set(o, "bundle", json_object_get(s, "bundle"));
    json_object_set(o, "rootfs", json_object_get(s, "rootfs"));
    json_object_set(o, "created", json_object_get(s, "created"));
    json_object_set(o, "owner", json_object_get(s, "owner"));
    if (json_is_object(ann) && json_object_size(ann) > 0)
        json_object_set(o, "annotations", ann);
    return o;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int oci_list_ids(char ***ids, struct wisp_err *err)
{
    DIR *d = opendir(oci_g.root);
    struct dirent *e;
    char **v = NULL;
    int n = 0;

    *ids = NULL;
    if (!d)
        return errno == ENOENT ? 0 : wisp_err_sys(err, errno, "%s", oci_g.root);
    while ((e = readdir(d))) {
        char **nv;
        if (e->d_name[0] == '.' || !oci_valid_id(e->d_name))
            continue;
        nv = realloc(v, sizeof(*v) * (n + 1));
        if (!nv)
            break;
        v = nv;
        v[n] = strdup(e->d_name);
        if (v[n])
            n++;
    }
    closedir(d);
    qsort(v, n, sizeof(*v), cmp_str);
    *ids = v;
    return n;
}
