/* config.json's process, mounts and network mapped onto the guest agent's structures. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "agentmap.h"

int oci_agent_process_from_json(json_t *j, const bool stdio_pipe[3], struct oci_agent_process *o,
                                struct wisp_err *err)
{
    json_t *user = json_object_get(j, "user"), *v, *cs = json_object_get(j, "consoleSize");
    size_t i;

    memset(o, 0, sizeof(*o));
    json_array_foreach(json_object_get(j, "args"), i, v)
    {
        if (i == WISP_AGENT_ARGS_MAX)
            return wisp_err_set(err, E2BIG, "process.args: more than %d", WISP_AGENT_ARGS_MAX);
        o->args[i] = json_string_value(v);
        o->p.nargs = i + 1;
    }
    json_array_foreach(json_object_get(j, "env"), i, v)
    {
        if (i == WISP_AGENT_ARGS_MAX)
            return wisp_err_set(err, E2BIG, "process.env: more than %d", WISP_AGENT_ARGS_MAX);
        o->env[i] = json_string_value(v);
        o->p.nenv = i + 1;
    }
    json_array_foreach(json_object_get(user, "additionalGids"), i, v)
    {
        if (i == WISP_AGENT_GROUPS_MAX)
            return wisp_err_set(err, E2BIG, "process.user.additionalGids: more than %d",
                                WISP_AGENT_GROUPS_MAX);
        o->gids[i] = (uint32_t)json_integer_value(v);
        o->p.ngids = i + 1;
    }
    json_array_foreach(json_object_get(j, "rlimits"), i, v)
    {
        if (i == WISP_AGENT_RLIMITS_MAX)
            return wisp_err_set(err, E2BIG, "process.rlimits: more than %d",
                                WISP_AGENT_RLIMITS_MAX);
        o->rlimits[i].type = json_string_value(json_object_get(v, "type"));
        o->rlimits[i].soft = (uint64_t)json_integer_value(json_object_get(v, "soft"));
        o->rlimits[i].hard = (uint64_t)json_integer_value(json_object_get(v, "hard"));
        o->p.nrlimits = i + 1;
    }
    o->p.args = o->args;
    o->p.env = o->env;
    o->p.additional_gids = o->gids;
    o->p.rlimits = o->rlimits;
    o->p.cwd = json_string_value(json_object_get(j, "cwd"));
    o->p.uid = (uint32_t)json_integer_value(json_object_get(user, "uid"));
    o->p.gid = (uint32_t)json_integer_value(json_object_get(user, "gid"));
    if (json_is_integer(json_object_get(user, "umask"))) {
        o->p.has_umask = true;
        o->p.umask = (uint32_t)json_integer_value(json_object_get(user, "umask"));
    }
    o->p.no_new_privileges = json_is_true(json_object_get(j, "noNewPrivileges"));
    o->p.terminal = json_is_true(json_object_get(j, "terminal"));
    o->p.rows = (uint16_t)json_integer_value(json_object_get(cs, "height"));
    o->p.cols = (uint16_t)json_integer_value(json_object_get(cs, "width"));
    for (int k = 0; k < 3; k++)
        o->p.stdio[k] = stdio_pipe[k] ? WISP_AGENT_STDIO_PIPE : WISP_AGENT_STDIO_NULL;
    return 0;
}

static int read_small_file(const char *path, void **data, size_t *len, uint32_t *mode,
                           struct wisp_err *err)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    ssize_t n;

    if (fd < 0 || fstat(fd, &st) < 0)
        return wisp_err_sys(err, errno, "bind mount source %s", path);
    if (st.st_size > WISP_AGENT_FILE_MAX)
        return wisp_err_set(err, EFBIG,
                            "bind mount source %s: a file bind is copied into the "
                            "guest, and this one is larger than %d bytes",
                            path, WISP_AGENT_FILE_MAX);
    *data = malloc((size_t)st.st_size + 1);
    if (!*data)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", path);
    n = read(fd, *data, (size_t)st.st_size);
    if (n < 0)
        return wisp_err_sys(err, errno, "read %s", path);
    *len = (size_t)n;
    *mode = st.st_mode & 07777;
    return 0;
}

int oci_agent_container_from_spec(const char *id, const struct oci_spec *spec,
                                  struct oci_agent_container *o, struct wisp_err *err)
{
    size_t i, k, nm = 0, nf = 0;
    json_t *m, *opt;
    int r;

    memset(o, 0, sizeof(*o));
    o->c.id = id;
    o->c.rootfs_tag = "rootfs";
    o->c.rootfs_readonly = spec->rootfs_readonly;
    o->c.hostname = spec->hostname;
    o->c.default_devices = true;
    json_array_foreach(spec->mounts, i, m)
    {
        const char *type = json_string_value(json_object_get(m, "type"));
        /* The kit's kernel has neither POSIX message queues nor cgroups (docs/oci.md): the
         * engines' default /dev/mqueue and /sys/fs/cgroup mounts are left out. */
        if (type && (strcmp(type, "mqueue") == 0 || strcmp(type, "cgroup") == 0 ||
                     strcmp(type, "cgroup2") == 0))
            continue;
        if (nm == WISP_AGENT_MOUNTS_MAX)
            return wisp_err_set(err, E2BIG, "mounts: more than %d", WISP_AGENT_MOUNTS_MAX);
        struct wisp_agent_mount *am = &o->mounts[nm];
        am->type = json_string_value(json_object_get(m, "type"));
        am->source = json_string_value(json_object_get(m, "source"));
        am->destination = json_string_value(json_object_get(m, "destination"));
        if (!am->type)
            am->type = "none";
        if (!am->source)
            am->source = am->type;
        am->options = o->options[nm];
        json_array_foreach(json_object_get(m, "options"), k, opt)
        {
            if (k == WISP_AGENT_OPTIONS_MAX)
                return wisp_err_set(err, E2BIG, "mounts[%zu].options: more than %d", i,
                                    WISP_AGENT_OPTIONS_MAX);
            o->options[nm][k] = json_string_value(opt);
            am->noptions = k + 1;
        }
        nm++;
    }
    for (i = 0; i < spec->n_binds; i++) {
        const struct oci_bind *b = &spec->binds[i];
        if (b->is_dir) {
            if (nm == WISP_AGENT_MOUNTS_MAX)
                return wisp_err_set(err, E2BIG, "mounts: more than %d", WISP_AGENT_MOUNTS_MAX);
            snprintf(o->tags[i], sizeof(o->tags[i]), "bind%zu", i);
            o->mounts[nm].type = "9p";
            o->mounts[nm].source = o->tags[i];
            o->mounts[nm].destination = b->destination;
            o->mounts[nm].options = o->options[nm];
            o->options[nm][0] = b->readonly ? "ro" : "rw";
            o->mounts[nm].noptions = 1;
            nm++;
            continue;
        }
        if (nf == WISP_AGENT_FILES_MAX)
            return wisp_err_set(err, E2BIG, "mounts: more than %d file bind mounts",
                                WISP_AGENT_FILES_MAX);
        r = read_small_file(b->source, &o->file_data[nf], &o->files[nf].len, &o->files[nf].mode,
                            err);
        if (r < 0)
            return r;
        o->files[nf].data = o->file_data[nf];
        o->files[nf].path = b->destination;
        nf++;
    }
    o->c.mounts = o->mounts;
    o->c.nmounts = nm;
    o->c.files = o->files;
    o->c.nfiles = nf;
    return 0;
}

void oci_agent_container_free(struct oci_agent_container *o)
{
    for (size_t i = 0; i < WISP_AGENT_FILES_MAX; i++)
        free(o->file_data[i]);
}

void oci_agent_network_from_netif(const struct oci_netif *nif, struct oci_agent_network *o)
{
    memset(o, 0, sizeof(*o));
    o->iface.name = "eth0";
    o->iface.mtu = nif->mtu;
    o->iface.up = true;
    for (unsigned i = 0; i < nif->n_addresses; i++)
        o->addrs[i] = nif->addresses[i];
    o->iface.addresses = o->addrs;
    o->iface.naddresses = nif->n_addresses;
    for (unsigned i = 0; i < nif->n_routes; i++) {
        o->routes[i].destination = nif->route_dst[i];
        o->routes[i].gateway = nif->route_gw[i][0] ? nif->route_gw[i] : NULL;
        o->routes[i].device = "eth0";
    }
    o->n.ifaces = &o->iface;
    o->n.nifaces = 1;
    o->n.routes = o->routes;
    o->n.nroutes = nif->n_routes;
}
