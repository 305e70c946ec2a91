/* wisp-jailer's command line (docs/wisp-jailer.md), parsed and checked into a struct
 * jail_options: by wisp-jailer itself, and by wispd, which jails its VMs in-process from the
 * same arguments. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/parse.h"
#include "jail.h"

/* p, kept for jail_options_free (NULL stays NULL: the caller says out of memory). */
static void *own(struct jail_options *o, void *p)
{
    if (p && o->nr_owned < JAIL_MAX_OWNED)
        o->owned[o->nr_owned++] = p;
    return p;
}

/* An absolute path inside the jail without "", "." or ".." components. */
static bool jail_path_ok(const char *p)
{
    if (p[0] != '/' || strlen(p) >= 4000)
        return false;
    for (const char *c = p + 1;;) {
        size_t n = strcspn(c, "/");
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        if (!c[n])
            return true;
        c += n + 1;
    }
}

static int add_file(struct jail_options *o, const char *v, bool ro, struct wisp_err *err)
{
    const char *opt = ro ? "--ro-file" : "--file";
    if (o->nr_files == JAIL_MAX_FILES)
        return wisp_err_set(err, EINVAL, "%s: more than %d files", opt, JAIL_MAX_FILES - 1);
    char *copy = own(o, strdup(v));
    if (!copy)
        return wisp_err_set(err, ENOMEM, "out of memory");
    struct jail_file *f = &o->files[o->nr_files];
    char *colon = strchr(copy, ':');
    if (colon)
        *colon = '\0';
    f->host = copy;
    if (colon) {
        f->jail_path = colon + 1;
    } else {
        const char *base = strrchr(copy, '/');
        char *p = own(o, malloc(strlen(base ? base : copy) + 2));
        if (!p)
            return wisp_err_set(err, ENOMEM, "out of memory");
        sprintf(p, "/%s", base ? base + 1 : copy);
        f->jail_path = p;
    }
    if (!jail_path_ok(f->jail_path))
        return wisp_err_set(err, EINVAL, "%s %s: '%s' is not an absolute path without '.' or '..'",
                            opt, v, f->jail_path);
    struct stat st;
    if (stat(f->host, &st) < 0)
        return wisp_err_sys(err, errno, "%s %s", opt, f->host);
    if (!S_ISREG(st.st_mode) && !S_ISSOCK(st.st_mode) && !S_ISBLK(st.st_mode) &&
        !S_ISDIR(st.st_mode))
        return wisp_err_set(err, EINVAL,
                            "%s %s: not a regular file, a socket, a block device or a directory",
                            opt, f->host);
    f->ro = ro;
    f->dir = S_ISDIR(st.st_mode);
    o->nr_files++;
    return 0;
}

static int add_cgroup(struct jail_options *o, char *v, struct wisp_err *err)
{
    if (!v)
        return wisp_err_set(err, ENOMEM, "out of memory");
    char *eq = strchr(v, '=');
    if (!eq || eq == v || !eq[1] || !strchr(v, '.') || strchr(v, '.') > eq ||
        memchr(v, '/', eq - v))
        return wisp_err_set(err, EINVAL, "--cgroup: '%s' is not FILE=VALUE (e.g. cpu.shares=512)",
                            v);
    if (o->nr_cgroups == JAIL_MAX_CGROUPS)
        return wisp_err_set(err, EINVAL, "--cgroup: more than %d", JAIL_MAX_CGROUPS);
    *eq = '\0';
    o->cgroups[o->nr_cgroups++] = (struct jail_cgroup_setting){.file = v, .value = eq + 1};
    return 0;
}

static int add_limit(struct jail_options *o, const char *v, struct wisp_err *err)
{
    static const struct {
        const char *name;
        int resource;
    } names[] = {{"no-file", RLIMIT_NOFILE}, {"fsize", RLIMIT_FSIZE}, {"nproc", RLIMIT_NPROC}};
    const char *eq = strchr(v, '=');
    uint64_t n;
    for (size_t i = 0; eq && i < 3; i++)
        if (strlen(names[i].name) == (size_t)(eq - v) && !strncmp(v, names[i].name, eq - v)) {
            if (parse_u64(eq + 1, &n) < 0)
                return wisp_err_set(err, EINVAL, "--resource-limit %s: not a number", v);
            if (o->nr_limits == JAIL_MAX_LIMITS)
                return wisp_err_set(err, EINVAL, "--resource-limit: too many");
            o->limits[o->nr_limits].resource = names[i].resource;
            o->limits[o->nr_limits++].value = n;
            return 0;
        }
    return wisp_err_set(err, EINVAL, "--resource-limit '%s': not no-file=N, fsize=N or nproc=N", v);
}

/* The value of an option (argv[*i + 1]), or an error naming it. */
static char *value_of(int argc, char **argv, int *i, struct wisp_err *err)
{
    if (*i + 1 >= argc) {
        wisp_err_set(err, EINVAL, "%s: missing value", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

static int parse_option(int argc, char **argv, int *i, struct jail_options *o, struct wisp_err *err)
{
    const char *a = argv[*i];
    if (!strcmp(a, "--daemonize"))
        return o->daemonize = true, 0;
    if (!strcmp(a, "--new-pid-ns"))
        return o->new_pid_ns = true, 0;
    if (!strcmp(a, "--mount-proc"))
        return o->mount_proc = true, 0;
    char *v = value_of(argc, argv, i, err);
    if (!v)
        return -EINVAL;
    if (!strcmp(a, "--id"))
        o->id = v;
    else if (!strcmp(a, "--exec-file"))
        o->exec_file = v;
    else if (!strcmp(a, "--uid"))
        return o->has_uid = true, parse_unprivileged_id(a, v, &o->uid, err);
    else if (!strcmp(a, "--gid"))
        return o->has_gid = true, parse_unprivileged_id(a, v, &o->gid, err);
    else if (!strcmp(a, "--chroot-base-dir"))
        o->base_dir = v;
    else if (!strcmp(a, "--netns"))
        o->netns = v;
    else if (!strcmp(a, "--parent-cgroup"))
        o->parent_cgroup = v;
    else if (!strcmp(a, "--cgroup"))
        return add_cgroup(o, own(o, strdup(v)), err); /* argv stays as ps shows it */
    else if (!strcmp(a, "--resource-limit"))
        return add_limit(o, v, err);
    else if (!strcmp(a, "--file"))
        return add_file(o, v, false, err);
    else if (!strcmp(a, "--ro-file"))
        return add_file(o, v, true, err);
    else if (!strcmp(a, "--keep-caps")) {
        if (!v[0] || strspn(v, "abcdefghijklmnopqrstuvwxyz_,") != strlen(v))
            return wisp_err_set(err, EINVAL, "--keep-caps '%s': not a list of capability names", v);
        o->keep_caps = v; /* wisp-vmm checks the names */
    } else if (!strcmp(a, "--cgroup-version")) {
        if (strcmp(v, "1") && strcmp(v, "2"))
            return wisp_err_set(err, EINVAL, "--cgroup-version: '%s' is not 1 or 2", v);
        o->cgroup_version = v[0] - '0';
    } else {
        --*i;
        return wisp_err_set(err, EINVAL, "%s: unknown option (see --help)", a);
    }
    return 0;
}

static bool name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n > 0 && n <= max &&
           strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-") == n;
}

/* What needs every option: required ones, the id, the exec file, the netns, the base dir. */
static int check_options(struct jail_options *o, struct wisp_err *err)
{
    if (!o->id || !o->exec_file || !o->has_uid || !o->has_gid)
        return wisp_err_set(err, EINVAL, "%s: missing (see --help)",
                            !o->id          ? "--id"
                            : !o->exec_file ? "--exec-file"
                            : !o->has_uid   ? "--uid"
                                            : "--gid");
    if (!name_ok(o->id, JAIL_ID_MAX))
        return wisp_err_set(err, EINVAL, "--id '%s': not 1 to %d letters, digits and '-'", o->id,
                            JAIL_ID_MAX);
    if (!name_ok(o->parent_cgroup ? o->parent_cgroup : "x", 255))
        return wisp_err_set(err, EINVAL, "--parent-cgroup '%s': not letters, digits and '-'",
                            o->parent_cgroup);
    struct stat st;
    if (stat(o->exec_file, &st) < 0)
        return wisp_err_sys(err, errno, "--exec-file %s", o->exec_file);
    if (!S_ISREG(st.st_mode) || access(o->exec_file, X_OK) < 0 || !(st.st_mode & 0111))
        return wisp_err_set(err, EINVAL, "--exec-file %s: not an executable regular file",
                            o->exec_file);
    const char *slash = strrchr(o->exec_file, '/');
    o->exec_name = slash ? slash + 1 : o->exec_file;
    if (strspn(o->exec_name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
            strlen(o->exec_name) ||
        o->exec_name[0] == '.')
        return wisp_err_set(err, EINVAL,
                            "--exec-file %s: a name of letters, digits, '-', '_' "
                            "and '.' is needed",
                            o->exec_file);
    if (!o->parent_cgroup)
        o->parent_cgroup = o->exec_name;
    if (o->mount_proc && !o->new_pid_ns)
        return wisp_err_set(err, EINVAL,
                            "--mount-proc: only with --new-pid-ns (else it shows the host's pids)");
    if (o->netns && (stat(o->netns, &st) < 0))
        return wisp_err_sys(err, errno, "--netns %s", o->netns);
    if (mkdir(o->base_dir, 0755) < 0 && errno != EEXIST)
        return wisp_err_sys(err, errno, "--chroot-base-dir %s", o->base_dir);
    char *base = own(o, realpath(o->base_dir, NULL)); /* the child mounts and pivots by path */
    if (!base || stat(base, &st) < 0 || !S_ISDIR(st.st_mode) || strlen(base) > 2048)
        return wisp_err_set(err, ENOTDIR, "--chroot-base-dir %s: not a directory", o->base_dir);
    o->base_dir = base;
    /* the exec file is the jail's first file, at /<exec-name> */
    memmove(&o->files[1], &o->files[0], o->nr_files * sizeof(o->files[0]));
    char *p = own(o, malloc(strlen(o->exec_name) + 2));
    if (!p)
        return wisp_err_set(err, ENOMEM, "out of memory");
    sprintf(p, "/%s", o->exec_name);
    /* under --keep-caps the VMM could write a linked or rw-bound inode: a read-only bind */
    o->files[0] = (struct jail_file){.host = o->exec_file, .jail_path = p, .ro = !!o->keep_caps};
    o->nr_files++;
    return 0;
}

int jail_parse(int argc, char **argv, struct jail_options *o, struct wisp_err *err)
{
    *o = (struct jail_options){.base_dir = JAIL_DEFAULT_BASE, .cgroup_version = 1};
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
        if (parse_option(argc, argv, &i, o, err) < 0)
            return -EINVAL;
    }
    o->vmm_args = argv + (i < argc ? i + 1 : i);
    o->nr_vmm_args = argc - (int)(o->vmm_args - argv);
    return check_options(o, err);
}

void jail_options_free(struct jail_options *o)
{
    for (unsigned i = 0; i < o->nr_owned; i++)
        free(o->owned[i]);
    o->nr_owned = 0;
}
