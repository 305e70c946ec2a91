/* config.json: loading and validation; what is honoured and refused is in docs/oci.md. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "oci.h"
#include "spec.h"

#define JSON_MAX (4u << 20)

json_t *oci_load_json_file(const char *path, struct wisp_err *err)
{
    cleanup_close int fd =
        strcmp(path, "-") == 0 ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC);
    cleanup_free char *buf = NULL;
    size_t len = 0;
    json_error_t jerr;
    json_t *j;

    if (fd < 0) {
        wisp_err_sys(err, errno, "open %s", path);
        return NULL;
    }
    buf = malloc(JSON_MAX + 1);
    if (!buf) {
        wisp_err_set(err, ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, JSON_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            wisp_err_sys(err, errno, "read %s", path);
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > JSON_MAX) {
            wisp_err_set(err, EFBIG, "%s: larger than %u bytes", path, JSON_MAX);
            return NULL;
        }
    }
    j = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j) {
        wisp_err_set(err, EINVAL, "%s: malformed JSON at line %d, column %d: %s", path, jerr.line,
                     jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        wisp_err_set(err, EINVAL, "%s: expected a JSON object", path);
        return NULL;
    }
    return j;
}

static int check_strings(json_t *a, const char *where, const char *name, bool required,
                         struct wisp_err *err)
{
    size_t i;
    json_t *v;

    if (!a)
        return required ? wisp_err_set(err, EINVAL, "%s: %s: missing (required)", where, name) : 0;
    if (!json_is_array(a))
        return wisp_err_set(err, EINVAL, "%s: %s: expected an array of strings", where, name);
    json_array_foreach(a, i, v)
    {
        if (!json_is_string(v))
            return wisp_err_set(err, EINVAL, "%s: %s[%zu]: expected a string", where, name, i);
        if (strlen(json_string_value(v)) != json_string_length(v))
            return wisp_err_set(err, EINVAL, "%s: %s[%zu]: holds a NUL byte", where, name, i);
    }
    if (required && json_array_size(a) == 0)
        return wisp_err_set(err, EINVAL, "%s: %s: must not be empty", where, name);
    return 0;
}

static int check_u32(json_t *o, const char *key, const char *where, bool required,
                     struct wisp_err *err)
{
    json_t *v = json_object_get(o, key);

    if (!v)
        return required ? wisp_err_set(err, EINVAL, "%s: %s: missing (required)", where, key) : 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > (json_int_t)UINT32_MAX)
        return wisp_err_set(err, EINVAL, "%s: %s: expected an integer from 0 to 4294967295", where,
                            key);
    return 0;
}

int oci_process_check(json_t *p, const char *where, struct wisp_err *err)
{
    json_t *user = json_object_get(p, "user"), *cwd = json_object_get(p, "cwd");
    json_t *rl = json_object_get(p, "rlimits"), *v;
    char w[128];
    size_t i;
    int r;

    if (!json_is_object(p))
        return wisp_err_set(err, EINVAL, "%s: expected an object", where);
    if ((r = check_strings(json_object_get(p, "args"), where, "args", true, err)) < 0 ||
        (r = check_strings(json_object_get(p, "env"), where, "env", false, err)) < 0)
        return r;
    if (!json_is_string(cwd) || json_string_value(cwd)[0] != '/')
        return wisp_err_set(err, EINVAL, "%s: cwd: must be an absolute path", where);
    if (json_object_get(p, "terminal") && !json_is_boolean(json_object_get(p, "terminal")))
        return wisp_err_set(err, EINVAL, "%s: terminal: expected true or false", where);
    snprintf(w, sizeof(w), "%s: user", where);
    if (user && ((r = check_u32(user, "uid", w, false, err)) < 0 ||
                 (r = check_u32(user, "gid", w, false, err)) < 0))
        return r;
    if (rl && !json_is_array(rl))
        return wisp_err_set(err, EINVAL, "%s: rlimits: expected an array", where);
    json_array_foreach(rl, i, v)
    {
        const char *type = json_string_value(json_object_get(v, "type"));
        if (!type || strncmp(type, "RLIMIT_", 7) != 0)
            return wisp_err_set(err, EINVAL, "%s: rlimits[%zu].type: expected RLIMIT_*", where, i);
        if (!json_is_integer(json_object_get(v, "soft")) ||
            !json_is_integer(json_object_get(v, "hard")))
            return wisp_err_set(err, EINVAL, "%s: rlimits[%zu]: soft and hard are required", where,
                                i);
    }
    return 0;
}

/* The vCPUs a cpuset string ("0-3,6") names. */
static unsigned cpuset_count(const char *s)
{
    unsigned n = 0, a, b;
    int used;

    while (*s) {
        if (sscanf(s, "%u%n", &a, &used) != 1)
            return 0;
        s += used;
        b = a;
        if (*s == '-') {
            if (sscanf(s + 1, "%u%n", &b, &used) != 1 || b < a)
                return 0;
            s += 1 + used;
        }
        n += b - a + 1;
        if (*s == ',')
            s++;
        else if (*s)
            return 0;
    }
    return n;
}

static int load_resources(json_t *res, struct oci_spec *s, struct wisp_err *err)
{
    json_t *mem = json_object_get(res, "memory"), *cpu = json_object_get(res, "cpu");
    json_t *limit = json_object_get(mem, "limit");
    json_int_t quota = json_integer_value(json_object_get(cpu, "quota"));
    json_int_t period = json_integer_value(json_object_get(cpu, "period"));

    if (limit && !json_is_integer(limit))
        return wisp_err_set(err, EINVAL, "linux.resources.memory.limit: expected an integer");
    if (json_integer_value(limit) > 0)
        s->memory_limit = (uint64_t)json_integer_value(limit);
    if (quota > 0) {
        if (period <= 0)
            period = 100000;
        s->vcpus = (unsigned)((quota + period - 1) / period);
    }
    s->cpuset = json_string_value(json_object_get(cpu, "cpus"));
    if (s->cpuset && s->cpuset[0]) {
        unsigned n = cpuset_count(s->cpuset);
        if (n == 0)
            return wisp_err_set(err, EINVAL, "linux.resources.cpu.cpus: '%s' is not a CPU list",
                                s->cpuset);
        if (s->vcpus == 0 || n < s->vcpus)
            s->vcpus = n;
    }
    return 0;
}

static int load_namespaces(json_t *nss, struct oci_spec *s, struct wisp_err *err)
{
    size_t i;
    json_t *ns;

    json_array_foreach(nss, i, ns)
    {
        const char *type = json_string_value(json_object_get(ns, "type"));
        const char *path = json_string_value(json_object_get(ns, "path"));
        if (!type)
            return wisp_err_set(err, EINVAL, "linux.namespaces[%zu].type: missing", i);
        if (strcmp(type, "user") == 0 && path)
            return wisp_err_set(err, EINVAL,
                                "linux.namespaces[%zu]: joining a user namespace "
                                "is not supported by wisp-oci",
                                i);
        if (strcmp(type, "network") == 0 && path && path[0]) {
            struct stat st;
            if (stat(path, &st) < 0)
                return wisp_err_sys(err, errno, "linux.namespaces[%zu]: network namespace %s", i,
                                    path);
            s->netns_path = path;
        }
    }
    return 0;
}

/* Bind mounts of host paths: shared with the guest (a directory over its own virtio-9p share,
 * a file's contents copied in); every other mount is the guest's to make. */
static int load_mounts(json_t *mounts, struct oci_spec *s, struct wisp_err *err)
{
    unsigned dir_binds = 0;
    size_t i;
    json_t *m;

    if (mounts && !json_is_array(mounts))
        return wisp_err_set(err, EINVAL, "mounts: expected an array");
    s->mounts = json_array();
    json_array_foreach(mounts, i, m)
    {
        const char *dst = json_string_value(json_object_get(m, "destination"));
        const char *type = json_string_value(json_object_get(m, "type"));
        const char *src = json_string_value(json_object_get(m, "source"));
        json_t *opts = json_object_get(m, "options"), *o;
        bool bind = type && strcmp(type, "bind") == 0, ro = false;
        size_t k;
        struct stat st;

        if (!dst || dst[0] != '/')
            return wisp_err_set(err, EINVAL, "mounts[%zu].destination: must be an absolute path",
                                i);
        if (check_strings(opts, "mounts", "options", false, err) < 0)
            return -EINVAL;
        json_array_foreach(opts, k, o)
        {
            if (strcmp(json_string_value(o), "bind") == 0 ||
                strcmp(json_string_value(o), "rbind") == 0)
                bind = true;
            if (strcmp(json_string_value(o), "ro") == 0)
                ro = true;
        }
        if (!bind) {
            json_array_append(s->mounts, m);
            continue;
        }
        if (!src)
            return wisp_err_set(err, EINVAL, "mounts[%zu]: a bind mount without a source", i);
        if (stat(src, &st) < 0)
            return wisp_err_sys(err, errno, "mounts[%zu]: bind source %s", i, src);
        if (!S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode))
            continue; /* device nodes and sockets of the host mean nothing in the guest */
        if (S_ISDIR(st.st_mode) && strcmp(dst, "/dev/shm") == 0) {
            /* podman's /dev/shm, a host tmpfs bound in: shared memory cannot cross the VM's
             * boundary, so the guest gets a tmpfs of its own (and the VM fits a template) */
            json_t *shm =
                json_pack("{s:s,s:s,s:s,s:[s,s,s,s]}", "destination", dst, "type", "tmpfs",
                          "source", "shm", "options", "nosuid", "noexec", "nodev", "mode=1777");
            if (!shm || json_array_append_new(s->mounts, shm) < 0)
                return wisp_err_set(err, ENOMEM, "out of memory");
            continue;
        }
        if (s->n_binds == OCI_MAX_BINDS)
            return wisp_err_set(err, E2BIG, "mounts: more than %d bind mounts", OCI_MAX_BINDS);
        if (S_ISDIR(st.st_mode) && ++dir_binds > OCI_MAX_DIR_BINDS)
            return wisp_err_set(err, E2BIG,
                                "mounts[%zu]: more than %d directory bind mounts (each "
                                "is a virtio-9p share of the VM)",
                                i, OCI_MAX_DIR_BINDS);
        struct oci_bind *b = &s->binds[s->n_binds++];
        snprintf(b->source, sizeof(b->source), "%s", src);
        snprintf(b->destination, sizeof(b->destination), "%s", dst);
        b->readonly = ro;
        b->is_dir = S_ISDIR(st.st_mode);
    }
    return 0;
}

static int check_refused(json_t *c, struct wisp_err *err)
{
    json_t *hooks = json_object_get(c, "hooks"), *v;
    const char *k;

    json_object_foreach(hooks, k, v)
    {
        if (json_array_size(v) > 0)
            return wisp_err_set(err, ENOTSUP,
                                "hooks.%s: hooks are not supported by wisp-oci "
                                "(the container runs in a VM, docs/oci.md)",
                                k);
    }
    if (json_array_size(json_object_get(json_object_get(c, "linux"), "uidMappings")) > 0)
        return wisp_err_set(err, ENOTSUP,
                            "linux.uidMappings: user namespaces are not "
                            "supported by wisp-oci");
    return 0;
}

int oci_spec_load(const char *bundle, struct oci_spec *s, struct wisp_err *err)
{
    char path[PATH_MAX];
    json_t *c, *root, *linux_;
    const char *rp;
    struct stat st;
    int r;

    memset(s, 0, sizeof(*s));
    if (snprintf(path, sizeof(path), "%s/config.json", bundle) >= (int)sizeof(path))
        return wisp_err_set(err, ENAMETOOLONG, "bundle path too long");
    if (access(path, F_OK) < 0 && errno == ENOENT)
        return wisp_err_set(err, ENOENT, "JSON specification file config.json not found");
    c = oci_load_json_file(path, err);
    if (!c)
        return -EINVAL;
    s->config = c;
    if (!json_is_string(json_object_get(c, "ociVersion")))
        return wisp_err_set(err, EINVAL, "config.json: ociVersion: missing (required)");
    root = json_object_get(c, "root");
    rp = json_string_value(json_object_get(root, "path"));
    if (!rp || !rp[0])
        return wisp_err_set(err, EINVAL, "config.json: root.path: missing (required)");
    if (snprintf(s->rootfs, sizeof(s->rootfs), "%s%s%s", rp[0] == '/' ? "" : bundle,
                 rp[0] == '/' ? "" : "/", rp) >= (int)sizeof(s->rootfs))
        return wisp_err_set(err, ENAMETOOLONG, "config.json: root.path: too long");
    if (stat(s->rootfs, &st) < 0)
        return wisp_err_sys(err, errno, "config.json: root.path: %s", s->rootfs);
    if (!S_ISDIR(st.st_mode))
        return wisp_err_set(err, ENOTDIR, "config.json: root.path: %s is not a directory",
                            s->rootfs);
    s->rootfs_readonly = json_is_true(json_object_get(root, "readonly"));
    s->process = json_object_get(c, "process");
    if (!s->process)
        return wisp_err_set(err, EINVAL, "config.json: process: missing (required)");
    if ((r = oci_process_check(s->process, "config.json: process", err)) < 0)
        return r;
    s->terminal = json_is_true(json_object_get(s->process, "terminal"));
    s->hostname = json_string_value(json_object_get(c, "hostname"));
    if ((r = check_refused(c, err)) < 0)
        return r;
    linux_ = json_object_get(c, "linux");
    s->cgroups_path = json_string_value(json_object_get(linux_, "cgroupsPath"));
    if ((r = load_resources(json_object_get(linux_, "resources"), s, err)) < 0 ||
        (r = load_namespaces(json_object_get(linux_, "namespaces"), s, err)) < 0 ||
        (r = load_mounts(json_object_get(c, "mounts"), s, err)) < 0)
        return r;
    return 0;
}

void oci_spec_free(struct oci_spec *s)
{
    json_decref(s->mounts);
    json_decref(s->config);
    s->config = s->mounts = NULL;
}
