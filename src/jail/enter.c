/* The steps that put a process into its jail (docs/wisp-jailer.md): run in the child that
 * becomes the VMM, in its new mount namespace, between the clone and the exec. Each is system
 * calls on what the parent prepared (no allocation, no lock, no stdio): the child may be a
 * fork-like clone of a threaded wispd, where another thread could hold malloc's lock. Each
 * returns NULL, or what failed with errno set. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "jail.h"

#define DEFAULT_NOFILE 2048 /* Firecracker's jailer's default no-file */

const char *jail_limits(const struct jail_options *o)
{
    bool nofile_given = false; /* a no-file given replaces the default (under a lower hard
                                  limit, without CAP_SYS_RESOURCE, the default cannot be set) */
    for (unsigned i = 0; i < o->nr_limits; i++)
        nofile_given |= o->limits[i].resource == RLIMIT_NOFILE;
    struct rlimit nofile = {DEFAULT_NOFILE, DEFAULT_NOFILE};
    if (!nofile_given && setrlimit(RLIMIT_NOFILE, &nofile) < 0)
        return "setrlimit no-file";
    for (unsigned i = 0; i < o->nr_limits; i++) {
        struct rlimit l = {o->limits[i].value, o->limits[i].value};
        if (setrlimit(o->limits[i].resource, &l) < 0)
            return "--resource-limit";
    }
    return NULL;
}

const char *jail_join_cgroups(const struct jail *j)
{
    for (unsigned i = 0; i < j->nr_procs; i++) /* "0" is the writer itself */
        if (write(j->procs_fd[i], "0", 1) != 1)
            return "joining the VM's cgroup (cgroup.procs)";
    return NULL;
}

const char *jail_enter(const struct jail *j, const struct jail_options *o)
{
    if (mount(NULL, "/", NULL, MS_SLAVE | MS_REC, NULL) < 0)
        return "mount / MS_SLAVE|MS_REC";
    if (mount(j->root, j->root, NULL, MS_BIND | MS_REC, NULL) < 0)
        return "bind mount of the jail's root";
    for (unsigned i = 0; i < o->nr_files; i++) {
        char target[8192]; /* snprintf into a buffer: no allocation, no lock */
        snprintf(target, sizeof(target), "%s%s", j->root, o->files[i].jail_path);
        const struct jail_file *f = &o->files[i];
        if (j->bind[i] && mount(f->host, target, NULL, MS_BIND | (f->dir ? MS_REC : 0), NULL) < 0)
            return f->host;
        /* a directory: nothing in it runs or opens a host device; read-only: not even with
         * CAP_DAC_OVERRIDE (--keep-caps) */
        unsigned long flags = (f->ro ? MS_RDONLY : 0) | (f->dir ? MS_NOSUID | MS_NODEV : 0);
        if (j->bind[i] && flags &&
            mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | flags, NULL) < 0)
            return f->host;
    }
    /* the VMM's own pids only (the pid namespace of --new-pid-ns), nothing of /proc/sys or
     * the host's: a 9p server reopens files through /proc/self/fd */
    char proc[4200];
    snprintf(proc, sizeof(proc), "%s/proc", j->root);
    if (o->mount_proc && mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                               "subset=pid,hidepid=invisible") < 0)
        return "--mount-proc: a proc file system (subset=pid) at the jail's /proc";
    const char *failed = jail_make_devices(j, o);
    if (failed)
        return failed;
    if (chdir(j->root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0)
        return "pivot_root into the jail";
    if (umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        return "detaching the host's root";
    if (sethostname(o->id, strlen(o->id)) < 0)
        return "sethostname";
    return NULL;
}

char **jail_vmm_argv(const struct jail_options *o, struct jail_vmm_argv *s)
{
    snprintf(s->uid, sizeof(s->uid), "%u", o->uid);
    snprintf(s->gid, sizeof(s->gid), "%u", o->gid);
    snprintf(s->path, sizeof(s->path), "/%s", o->exec_name);
    char **argv = calloc((size_t)o->nr_vmm_args + 10, sizeof(*argv));
    if (!argv)
        return NULL;
    int n = 0;
    argv[n++] = s->path;
    argv[n++] = "--id";
    argv[n++] = (char *)o->id;
    for (int i = 0; i < o->nr_vmm_args; i++)
        argv[n++] = o->vmm_args[i];
    argv[n++] = "--uid";
    argv[n++] = s->uid;
    argv[n++] = "--gid";
    argv[n++] = s->gid;
    if (o->keep_caps) {
        argv[n++] = "--keep-caps";
        argv[n++] = (char *)o->keep_caps;
    }
    return argv;
}

void jail_fail(const char *prog, const char *what)
{
    /* strerrordesc_np: a table's text, no locale and no lock (strerror may take both) */
    const char *why = strerrordesc_np(errno);
    const char *parts[] = {prog, ": ", what, ": ", why ? why : "error", "\n"};
    char line[1024];
    size_t len = 0;
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
        size_t n = strnlen(parts[i], sizeof(line) - len);
        memcpy(line + len, parts[i], n);
        len += n;
    }
    if (write(2, line, len) < 0) {
    }
}
