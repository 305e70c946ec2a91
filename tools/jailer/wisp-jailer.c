/*
 * wisp-jailer: runs wisp-vmm (or --exec-file) in a jail, Firecracker's jailer done for wisp
 * (docs/wisp-jailer.md): <base>/<exec-name>/<id>/root with hard links (or bind mounts) of the
 * exec file and the --file files, /dev/kvm and /dev/net/tun nodes only, new mount, ipc, uts and
 * (--new-pid-ns) pid namespaces, --netns joined, the VM's cgroups, rlimits, every fd closed,
 * then the exec file run with --uid/--gid. The jailer stays outside as the VM's reaper: when the
 * VM's last process has ended it removes the jail directory and the cgroups and exits with the
 * VM's status.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/parse.h"
#include "jail.h"

#define EXIT_RUNTIME   1
#define EXIT_USAGE     2
#define DEFAULT_BASE   "/srv/jailer"
#define DEFAULT_NOFILE 2048 /* Firecracker's jailer's default no-file */

static const char usage_text[] =
    "usage: wisp-jailer --id ID --exec-file PATH --uid UID --gid GID [options] -- [VMM args]\n"
    "\n"
    "Runs PATH (wisp-vmm) jailed: in <base>/<exec-name>/<ID>/root, new mount, ipc and uts\n"
    "namespaces, as UID:GID with no capability; the VMM's own arguments follow \"--\" (paths\n"
    "in them are the jail's). The jailer waits for the VM and removes the jail when it ends.\n"
    "Firecracker's jailer's options where the two overlap; see docs/wisp-jailer.md.\n"
    "\n"
    "    --id ID                 the VM's id: 1 to 64 letters, digits and '-'; passed on as --id\n"
    "    --exec-file PATH        the VMM to run (an executable regular file, statically linked)\n"
    "    --uid UID --gid GID     the unprivileged user and group it runs as (numeric, not 0)\n"
    "    --chroot-base-dir DIR   where jails are made (default " DEFAULT_BASE ")\n"
    "    --netns PATH            join this network namespace (e.g. /run/netns/NAME)\n"
    "    --cgroup FILE=VALUE     write VALUE into the VM's cgroup file FILE (cpu.shares=512,\n"
    "                            pids.max=64, memory.limit_in_bytes=...); repeatable\n"
    "    --cgroup-version 1|2    1 (default): a cgroup per controller named, under\n"
    "                            /sys/fs/cgroup/<controller>; 2: one under the cgroup2 mount\n"
    "    --parent-cgroup NAME    the cgroups' parent (default: the exec file's name)\n"
    "    --resource-limit no-file=N|fsize=N|nproc=N\n"
    "                            an rlimit of the VMM (repeatable; default no-file=2048)\n"
    "    --daemonize             detach: stdio to /dev/null, a new session; the jailer exits 0\n"
    "                            once the VMM runs, and its reaper removes the jail later\n"
    "    --new-pid-ns            the VMM is pid 1 of a new pid namespace\n"
    "    --mount-proc            (wisp) a proc file system at the jail's /proc showing only the\n"
    "                            pids of that namespace (subset=pid, hidepid=invisible): for a\n"
    "                            9p share (reopens files by /proc/self/fd); needs --new-pid-ns\n"
    "    --file HOST[:JAILPATH]  (wisp) make HOST available at JAILPATH (default /<basename>):\n"
    "                            a hard link, or a bind mount across file systems; repeatable.\n"
    "                            Ownership is HOST's: the VMM opens it after its drop only if\n"
    "                            UID may (what it opens before, it opens as root). A directory\n"
    "                            is always bind-mounted (nosuid, nodev)\n"
    "    --ro-file HOST[:JAILPATH]\n"
    "                            (wisp) the same, always a read-only bind mount (never a hard\n"
    "                            link: writes fail even with CAP_DAC_OVERRIDE)\n"
    "    --keep-caps CAP,...     (wisp) passed on to wisp-vmm: it becomes UID before opening\n"
    "                            anything and keeps exactly these file capabilities (chown,\n"
    "                            dac_override, dac_read_search, fowner, fsetid: a 9p share\n"
    "                            served as UID). No hard link is made then: the exec file is\n"
    "                            a read-only bind mount, each --file a bind mount\n"
    "    -h, --help              print this text and exit\n"
    "\n"
    "EXIT STATUS\n"
    "    the VMM's, or 1 (runtime error) or 2 (usage error: a bad option, id or path, a missing\n"
    "    netns, a symlink in the base directory); nothing of the jail is left after either\n";

static int usage_error(const struct wisp_err *err)
{
    fprintf(stderr, "wisp-jailer: %s\n", err->msg);
    return EXIT_USAGE;
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
    char *copy = strdup(v);
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
        char *p = malloc(strlen(base ? base : copy) + 2);
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
        return add_cgroup(o, strdup(v), err); /* argv stays as ps shows it */
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
    char *base = realpath(o->base_dir, NULL); /* the child mounts and pivots by path */
    if (!base || stat(base, &st) < 0 || !S_ISDIR(st.st_mode) || strlen(base) > 2048)
        return wisp_err_set(err, ENOTDIR, "--chroot-base-dir %s: not a directory", o->base_dir);
    o->base_dir = base;
    /* the exec file is the jail's first file, at /<exec-name> */
    memmove(&o->files[1], &o->files[0], o->nr_files * sizeof(o->files[0]));
    char *p = malloc(strlen(o->exec_name) + 2);
    if (!p)
        return wisp_err_set(err, ENOMEM, "out of memory");
    sprintf(p, "/%s", o->exec_name);
    /* under --keep-caps the VMM could write a linked or rw-bound inode: a read-only bind */
    o->files[0] = (struct jail_file){.host = o->exec_file, .jail_path = p, .ro = !!o->keep_caps};
    o->nr_files++;
    return 0;
}

int jailer_parse(int argc, char **argv, struct jail_options *o, struct wisp_err *err);
int jailer_parse(int argc, char **argv, struct jail_options *o, struct wisp_err *err)
{
    *o = (struct jail_options){.base_dir = DEFAULT_BASE, .cgroup_version = 1};
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

int jailer_run(const struct jail_options *o, struct wisp_err *err, bool *usage);

int main(int argc, char **argv)
{
    struct jail_options o;
    struct wisp_err err = {0};
    int r = jailer_parse(argc, argv, &o, &err);
    if (r == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (r < 0)
        return usage_error(&err);
    bool usage = false;
    r = jailer_run(&o, &err, &usage);
    if (r < 0) {
        fprintf(stderr, "wisp-jailer: %s\n", err.msg);
        return usage ? EXIT_USAGE : EXIT_RUNTIME;
    }
    return r;
}
