/* Where wisp-oci's guest comes from: /etc/wisp/oci.json, else the kit's kernel and agent
 * initramfs found from where the wisp-oci binary lies (docs/oci.md, "The guest"). */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "host.h"
#include "oci.h"
#include "spec.h"

#ifndef WISP_SOURCE_ROOT
#define WISP_SOURCE_ROOT ""
#endif
#ifndef WISP_PREFIX
#define WISP_PREFIX "/usr/local"
#endif

/* The agent's initramfs, as src/oci/initramfs/meson.build names it. */
#define AGENT_INITRAMFS "wisp-agent.cpio"

/* guest/kernel/cmdline-extra's options for PVM hosts (the same test: pvm_native=Y). */
static void host_cmdline_extra(char *buf, size_t len)
{
    char v[8] = "";
    FILE *f = fopen("/sys/module/kvm_pvm/parameters/pvm_native", "re");

    if (f) {
        if (!fgets(v, sizeof(v), f))
            v[0] = 0;
        fclose(f);
    }
    snprintf(buf, len, "%s",
             v[0] == 'Y' ? "noxsave nofsgsbase noreplace-smp percpu_alloc=page "
                           "clearcpuid=popcnt,smap,erms,fsrm emulated_cpl0 rodata=off"
                         : "");
}

static bool exists(const char *p)
{
    return p[0] && access(p, R_OK) == 0;
}

static int from_file(struct oci_guest *g, const char *path, struct wisp_err *err)
{
    json_t *j = oci_load_json_file(path, err), *v;
    const char *k;

    if (!j)
        return -EINVAL;
    json_object_foreach(j, k, v)
    {
        char *dst = NULL;
        unsigned *num = NULL;
        if (strcmp(k, "kernel") == 0)
            dst = g->kernel;
        else if (strcmp(k, "initramfs") == 0)
            dst = g->initramfs;
        else if (strcmp(k, "vmm") == 0)
            dst = g->vmm;
        else if (strcmp(k, "jailer") == 0)
            dst = g->jailer, g->jailer_exec = true;
        else if (strcmp(k, "jail_uid") == 0)
            num = &g->jail_uid;
        else if (strcmp(k, "jail_gid") == 0)
            num = &g->jail_gid;
        else if (strcmp(k, "cache_dir") == 0)
            dst = g->cache_dir;
        else if (strcmp(k, "cmdline") == 0)
            dst = g->cmdline;
        else if (strcmp(k, "memory_mib") == 0)
            num = &g->mem_mib;
        else if (strcmp(k, "vcpus") == 0)
            num = &g->vcpus;
        else if (strcmp(k, "overhead_mib") == 0)
            num = &g->overhead_mib;
        else if (strcmp(k, "template") == 0 && json_is_boolean(v))
            g->template_on = json_is_true(v);
        else if (strcmp(k, "jail") == 0 && json_is_boolean(v))
            g->jail = json_is_true(v);
        else {
            json_decref(j);
            return wisp_err_set(err, EINVAL,
                                "%s: unknown key '%s' (known: kernel, initramfs, "
                                "vmm, cmdline, memory_mib, vcpus, overhead_mib, template, "
                                "cache_dir, jail, jailer, jail_uid, jail_gid)",
                                path, k);
        }
        if (dst && !json_is_string(v)) {
            json_decref(j);
            return wisp_err_set(err, EINVAL, "%s: %s: expected a string", path, k);
        }
        if (num &&
            (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1048576)) {
            json_decref(j);
            return wisp_err_set(err, EINVAL, "%s: %s: expected an integer from 1 to 1048576", path,
                                k);
        }
        if (dst)
            snprintf(dst, PATH_MAX, "%s", json_string_value(v));
        if (num)
            *num = (unsigned)json_integer_value(v);
    }
    json_decref(j);
    snprintf(g->source, sizeof(g->source), "%s", path);
    return 0;
}

/* A build tree: <build>/src/oci/wisp-oci; the kernel is guest/kernel/build.sh's cache entry. */
static void from_build_tree(struct oci_guest *g, const char *build)
{
    char script[PATH_MAX];
    cleanup_free char *out = NULL;
    struct wisp_err err;

    if (!g->vmm[0])
        snprintf(g->vmm, sizeof(g->vmm), "%s/src/vmm/wisp-vmm", build);
    if (!g->jailer[0])
        snprintf(g->jailer, sizeof(g->jailer), "%s/tools/wisp-jailer", build);
    if (!g->initramfs[0])
        snprintf(g->initramfs, sizeof(g->initramfs), "%s/src/oci/initramfs/" AGENT_INITRAMFS,
                 build);
    snprintf(script, sizeof(script), "%s/guest/kernel/build.sh", WISP_SOURCE_ROOT);
    const char *argv[] = {script, "--print-path", NULL};
    if (!g->kernel[0] && WISP_SOURCE_ROOT[0] && oci_run_output(argv, &out, &err) == 0) {
        out[strcspn(out, "\n")] = 0;
        snprintf(g->kernel, sizeof(g->kernel), "%s/bzImage", out);
        if (!exists(g->kernel))
            snprintf(g->kernel, sizeof(g->kernel), "%s/vmlinux", out);
    }
    if (!g->source[0])
        snprintf(g->source, sizeof(g->source), "the build tree %s", build);
}

int oci_guest_find(struct oci_guest *g, struct wisp_err *err)
{
    const char *cfg = getenv("WISP_OCI_CONFIG");
    char self[PATH_MAX], *dir, *up;
    int r;

    memset(g, 0, sizeof(*g));
    g->mem_mib = 128;
    g->vcpus = 1;
    g->overhead_mib = 64;
    g->template_on = true; /* docs/oci.md "Templates": off only when oci.json says so */
    g->jail = true;
    g->jail_uid = g->jail_gid = OCI_JAIL_ID;
    snprintf(g->cache_dir, sizeof(g->cache_dir), "/var/cache/wisp-oci");
    host_cmdline_extra(g->cmdline, sizeof(g->cmdline));
    snprintf(self, sizeof(self), "%s", oci_g.self);
    dir = dirname(self); /* .../src/oci or <prefix>/bin */
    if (!cfg)
        cfg = "/etc/wisp/oci.json";
    /* the file's keys first; what it leaves out comes from where wisp-oci lies */
    if (access(cfg, F_OK) == 0 && (r = from_file(g, cfg, err)) < 0)
        return r;
    char build[PATH_MAX];
    snprintf(build, sizeof(build), "%s/../..", dir);
    up = realpath(build, NULL);
    if (strstr(dir, "/src/oci") && up) {
        from_build_tree(g, up);
    } else {
        if (!g->vmm[0])
            snprintf(g->vmm, sizeof(g->vmm), "%s/wisp-vmm", dir);
        if (!g->kernel[0])
            snprintf(g->kernel, sizeof(g->kernel), "%s/../share/wisp/oci/vmlinux", dir);
        if (!g->initramfs[0])
            snprintf(g->initramfs, sizeof(g->initramfs), "%s/../share/wisp/oci/" AGENT_INITRAMFS,
                     dir);
        if (!g->source[0])
            snprintf(g->source, sizeof(g->source), "the install prefix of %s", oci_g.self);
    }
    free(up);
    if (!g->vmm[0])
        snprintf(g->vmm, sizeof(g->vmm), "%s/wisp-vmm", dir);
    if (!g->jailer[0])
        snprintf(g->jailer, sizeof(g->jailer), "%s/wisp-jailer", dir);
    if (g->jail && g->jailer_exec && !exists(g->jailer))
        return wisp_err_set(err, ENOENT,
                            "the guest (from %s): wisp-jailer %s not found (or \"jail\": false "
                            "in oci.json)",
                            g->source, g->jailer);
    if (!exists(g->vmm))
        return wisp_err_set(err, ENOENT, "the guest (from %s): wisp-vmm %s not found", g->source,
                            g->vmm);
    if (!exists(g->kernel))
        return wisp_err_set(err, ENOENT,
                            "the guest (from %s): kernel '%s' not found (build it "
                            "with guest/kernel/build.sh, or name it in /etc/wisp/oci.json)",
                            g->source, g->kernel);
    if (!exists(g->initramfs))
        return wisp_err_set(err, ENOENT, "the guest (from %s): agent initramfs '%s' not found",
                            g->source, g->initramfs);
    return 0;
}
