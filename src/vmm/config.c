/* The VM's configuration: defaults, owned strings, whole-configuration checks. */
#include "vmm/config.h"
#include "vmm/seccomp.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* On, except in a sanitized build (meson.build: the sanitizers' own calls are on no allow-list;
 * --seccomp=on still tests the filters there). */
#ifdef WISP_SANITIZED
#define VMM_SECCOMP_DEFAULT VMM_SECCOMP_OFF
#else
#define VMM_SECCOMP_DEFAULT VMM_SECCOMP_ON
#endif

void vm_config_init(struct vm_config *cfg)
{
    *cfg = (struct vm_config){.action = VMM_RUN,
                              .mem_bytes = VMM_DEFAULT_MEM_MIB << 20,
                              .cpus = 1,
                              .serial = VMM_SERIAL_STDIO,
                              .console = VMM_CONSOLE_SERIAL,
                              .cmdline_devices = true,
                              .seccomp = VMM_SECCOMP_DEFAULT};
}

char *vm_config_strdup(struct vm_config *cfg, const char *s, struct wisp_err *err)
{
    if (cfg->nr_owned == cfg->cap_owned) {
        unsigned cap = cfg->cap_owned ? cfg->cap_owned * 2 : 16;
        char **owned = realloc(cfg->owned, cap * sizeof(*owned));
        if (!owned) {
            wisp_err_set(err, ENOMEM, "out of memory for the configuration");
            return NULL;
        }
        cfg->owned = owned;
        cfg->cap_owned = cap;
    }
    char *copy = strdup(s);
    if (!copy) {
        wisp_err_set(err, ENOMEM, "out of memory for the configuration");
        return NULL;
    }
    cfg->owned[cfg->nr_owned++] = copy;
    return copy;
}

int vm_config_set_string(struct vm_config *cfg, const char **slot, const char *s,
                         struct wisp_err *err)
{
    char *copy = NULL;
    if (s && !(copy = vm_config_strdup(cfg, s, err)))
        return -ENOMEM;
    unsigned others = cfg->nr_owned - (copy ? 1 : 0); /* not the new copy */
    for (unsigned i = 0; *slot && i < others; i++)
        if (cfg->owned[i] == *slot) { /* the old copy: no one else points into it */
            free(cfg->owned[i]);
            cfg->owned[i] = cfg->owned[--cfg->nr_owned];
            break;
        }
    *slot = copy;
    return 0;
}

void vm_config_free(struct vm_config *cfg)
{
    for (unsigned i = 0; i < cfg->nr_owned; i++)
        free(cfg->owned[i]);
    free(cfg->owned);
    cfg->owned = NULL;
    cfg->nr_owned = cfg->cap_owned = 0;
}

/* Two devices may not share a name (a drive's or NIC's id). */
int vm_config_check(const struct vm_config *cfg, struct wisp_err *err)
{
    const char *ids[VMM_MAX_DRIVES + VMM_MAX_NICS + VMM_MAX_PMEM + VMM_MAX_FS];
    unsigned n = 0;
    for (unsigned i = 0; i < cfg->nr_drives; i++)
        if (cfg->drives[i].id)
            ids[n++] = cfg->drives[i].id;
    for (unsigned i = 0; i < cfg->nr_nics; i++)
        if (cfg->nics[i].id)
            ids[n++] = cfg->nics[i].id;
    for (unsigned i = 0; i < cfg->nr_pmems; i++)
        if (cfg->pmems[i].id)
            ids[n++] = cfg->pmems[i].id;
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = i + 1; j < n; j++)
            if (!strcmp(ids[i], ids[j]))
                return wisp_err_set(err, EINVAL, "id=%s: two devices have this id", ids[i]);
    return 0;
}

int vm_config_mem_backend(struct vm_config *cfg, const char *v, const char *where,
                          struct wisp_err *err)
{
    struct guest_mem_options *m = &cfg->mem;
    const char *path = NULL;
    enum guest_mem_backend b;
    if (!strcmp(v, "anon")) {
        b = GUEST_MEM_ANON;
    } else if (!strcmp(v, "memfd")) {
        b = GUEST_MEM_MEMFD;
    } else if (!strncmp(v, "file=", 5) && v[5]) {
        b = GUEST_MEM_FILE;
        path = v + 5;
    } else if (!strcmp(v, "hugetlbfs")) {
        b = GUEST_MEM_HUGETLBFS;
    } else if (!strncmp(v, "hugetlbfs=", 10) && v[10]) {
        b = GUEST_MEM_HUGETLBFS;
        path = v + 10;
    } else {
        return wisp_err_set(err, EINVAL,
                            "%s: '%.64s' is not anon, memfd, file=PATH, hugetlbfs or "
                            "hugetlbfs=MOUNT",
                            where, v);
    }
    /* the old path's copy is freed: the API may set the backend again and again */
    if (vm_config_set_string(cfg, &m->path, path, err) < 0)
        return -ENOMEM;
    m->backend = b;
    return 0;
}

int vm_config_mem_switch(const char *v, const char *where, enum guest_mem_switch *out,
                         struct wisp_err *err)
{
    if (!strcmp(v, "on"))
        *out = GUEST_MEM_ON;
    else if (!strcmp(v, "off"))
        *out = GUEST_MEM_OFF;
    else
        return wisp_err_set(err, EINVAL, "%s: '%.32s' is not on or off", where, v);
    return 0;
}
