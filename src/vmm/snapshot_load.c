/* PUT /snapshot/load (docs/snapshot.md): a fresh wisp-vmm builds the machine a snapshot
 * describes (the machine of its CONF section, with this process's console and the network
 * overrides), its RAM from the memory file (MAP_PRIVATE) or a page-fault handler (Uffd), each
 * vCPU's state given on its own thread, then the in-kernel devices' and the devices' state.
 * Everything in the file is checked before anything is built; nothing is started on failure. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/io.h"
#include "common/log.h"
#include "kvm/state.h"
#include "vmm/snapshot_int.h"
#include "vmm/vmm.h"

struct device_image {
    char *name, *type;
    struct state_reader state; /* the section after its name and type */
};

/* A snapshot read and checked, and what the machine is built from. */
struct load_ctx {
    struct vmm *v;
    const struct snapshot_load_params *p;
    struct snapshot_image img;
    struct snapshot_memory_info mem;
    struct kvm_vm_state vm;
    struct kvm_vcpu_state *vcpus;
    unsigned nr_vcpus;
    struct device_image *devices;
    unsigned nr_devices;
    int mem_fd;    /* the memory file (File backend) */
    int uffd_sock; /* the handler's socket (Uffd backend) */
    int uffd;
    struct machine_restore restore;
};

static int load_fail(const struct load_ctx *c, struct wisp_err *err)
{
    return wisp_err_wrap(err, "%s", c->p->snapshot_path);
}

/* Only a wisp-vmm that was given no machine yet: the snapshot says what the machine is. */
static int check_fresh(const struct vmm *v, struct wisp_err *err)
{
    const struct vm_config *c = v->cfg;
    if (v->state != VMM_NOT_STARTED || v->have_machine || (v->snap && v->snap->have_cfg))
        return wisp_err_set(err, EINVAL,
                            "the VM is %s: a snapshot loads only into a wisp-vmm that has not "
                            "started a VM",
                            vmm_state_name(v->state));
    const char *what = c->kernel        ? "a kernel (boot-source)"
                       : c->nr_drives   ? "drives"
                       : c->nr_nics     ? "network interfaces"
                       : c->rng         ? "an entropy device"
                       : c->nr_fs       ? "virtio-9p shares"
                       : c->test_socket ? "--test-socket"
                                        : NULL;
    if (what)
        return wisp_err_set(err, EINVAL,
                            "this wisp-vmm was configured with %s: a snapshot loads only into "
                            "a fresh one (the snapshot says what the machine is)",
                            what);
    return 0;
}

static int check_params(const struct snapshot_load_params *p, struct wisp_err *err)
{
    if (!p->snapshot_path || !*p->snapshot_path)
        return wisp_err_set(err, EINVAL, "snapshot_path: missing");
    if (!p->backend_path || !*p->backend_path)
        return wisp_err_set(err, EINVAL, "mem_backend: backend_path: missing");
    if (p->nr_fs_overrides > SNAPSHOT_MAX_OVERRIDES)
        return wisp_err_set(err, EINVAL, "fs_overrides: more than %u", SNAPSHOT_MAX_OVERRIDES);
    for (unsigned i = 0; i < p->nr_fs_overrides; i++) {
        const struct snapshot_fs_override *o = &p->fs_overrides[i];
        if (!o->fs_id == !o->tag || (o->fs_id && !*o->fs_id) || (o->tag && !*o->tag) ||
            !o->path_on_host || !*o->path_on_host || o->read_only < -1 || o->read_only > 1)
            return wisp_err_set(err, EINVAL,
                                "fs_overrides[%u]: one of fs_id and tag, and path_on_host, are "
                                "required",
                                i);
    }
    if (p->nr_overrides > SNAPSHOT_MAX_OVERRIDES || p->nr_drive_overrides > SNAPSHOT_MAX_OVERRIDES)
        return wisp_err_set(err, EINVAL, "%s: more than %u",
                            p->nr_overrides > SNAPSHOT_MAX_OVERRIDES ? "network_overrides"
                                                                     : "drive_overrides",
                            SNAPSHOT_MAX_OVERRIDES);
    for (unsigned i = 0; i < p->nr_overrides; i++)
        if (!p->overrides[i].iface_id || !*p->overrides[i].iface_id ||
            !p->overrides[i].host_dev_name || !*p->overrides[i].host_dev_name)
            return wisp_err_set(
                err, EINVAL, "network_overrides[%u]: iface_id and host_dev_name are required", i);
    for (unsigned i = 0; i < p->nr_drive_overrides; i++)
        if (!p->drive_overrides[i].drive_id || !*p->drive_overrides[i].drive_id ||
            !p->drive_overrides[i].path_on_host || !*p->drive_overrides[i].path_on_host)
            return wisp_err_set(err, EINVAL,
                                "drive_overrides[%u]: drive_id and path_on_host are required", i);
    return 0;
}

/* A device's name in the machine: its id, else "netN" / "blkN" (machine_devices.c). */
static bool named(const char *id, const char *prefix, unsigned i, const char *name)
{
    char dflt[16];
    snprintf(dflt, sizeof(dflt), "%s%u", prefix, i);
    return !strcmp(id ? id : dflt, name);
}

static int apply_drive_overrides(struct vm_config *cfg, const struct snapshot_load_params *p,
                                 struct wisp_err *err)
{
    for (unsigned o = 0; o < p->nr_drive_overrides; o++) {
        const struct snapshot_drive_override *ov = &p->drive_overrides[o];
        unsigned i = 0;
        while (i < cfg->nr_drives && !named(cfg->drives[i].id, "blk", i, ov->drive_id))
            i++;
        if (i == cfg->nr_drives)
            return wisp_err_set(err, EINVAL,
                                "drive_overrides: drive_id %s: the snapshot has no such drive "
                                "(it has %u)",
                                ov->drive_id, cfg->nr_drives);
        cfg->drives[i].path = vm_config_strdup(cfg, ov->path_on_host, err);
        if (!cfg->drives[i].path)
            return -ENOMEM;
        cfg->drives[i].format = NULL; /* an overlay is qcow2 over a raw image: probed */
    }
    return 0;
}

/* Each share at most once: two overrides of one share are refused. */
static int apply_fs_overrides(struct vm_config *cfg, const struct snapshot_load_params *p,
                              struct wisp_err *err)
{
    bool done[VMM_MAX_FS] = {false};
    for (unsigned o = 0; o < p->nr_fs_overrides; o++) {
        const struct snapshot_fs_override *ov = &p->fs_overrides[o];
        int i = vm_fs_override(cfg, ov->fs_id, ov->tag, ov->path_on_host, ov->read_only, err);
        if (i < 0)
            return i;
        if (done[i])
            return wisp_err_set(err, EINVAL, "fs_overrides: share %s is overridden twice",
                                cfg->fs[i].tag);
        done[i] = true;
    }
    return 0;
}

static int apply_overrides(struct vm_config *cfg, const struct snapshot_load_params *p,
                           struct wisp_err *err)
{
    for (unsigned o = 0; o < p->nr_overrides; o++) {
        const struct snapshot_net_override *ov = &p->overrides[o];
        unsigned i = 0;
        while (i < cfg->nr_nics && !named(cfg->nics[i].id, "net", i, ov->iface_id))
            i++;
        if (i == cfg->nr_nics)
            return wisp_err_set(err, EINVAL,
                                "network_overrides: iface_id %s: the snapshot has no such network "
                                "interface (it has %u)",
                                ov->iface_id, cfg->nr_nics);
        if (strlen(ov->host_dev_name) >= 16)
            return wisp_err_set(err, EINVAL,
                                "network_overrides: host_dev_name %s: longer than "
                                "a network interface name (15)",
                                ov->host_dev_name);
        if (!(cfg->nics[i].tap = vm_config_strdup(cfg, ov->host_dev_name, err)))
            return -ENOMEM;
        uint8_t mac[6];
        if (ov->guest_mac && virtio_net_parse_mac(ov->guest_mac, mac) < 0)
            return wisp_err_set(err, EINVAL,
                                "network_overrides: iface_id %s: guest_mac '%s' is not a "
                                "unicast MAC (02:00:00:00:00:01)",
                                ov->iface_id, ov->guest_mac);
        if (ov->guest_mac && memcmp(mac, cfg->nics[i].mac, 6)) {
            memcpy(cfg->nics[i].mac, mac, 6);
            cfg->nics[i].mac_override = true;
        }
    }
    int r = apply_drive_overrides(cfg, p, err);
    return r < 0 ? r : apply_fs_overrides(cfg, p, err);
}

/* The machine: the snapshot's guest side, this process's host side (console, --debug, ...). */
static int read_config(struct load_ctx *c, struct vm_config *cfg, struct wisp_err *err)
{
    const struct vm_config *host = c->v->cfg;
    vm_config_init(cfg);
    cfg->serial = host->serial;
    cfg->serial_path = host->serial_path;
    cfg->boot_marker = host->boot_marker;
    cfg->debug = host->debug;
    cfg->async_teardown = host->async_teardown;
    cfg->api = host->api; /* --id, the API socket, logger and metrics: this process's */
    cfg->track_dirty_pages = c->p->track_dirty_pages;
    /* this process's --thp and --ksm apply to the restored memory (clones merged by KSM) */
    cfg->mem.thp = host->mem.thp;
    cfg->mem.ksm = host->mem.ksm;
    const struct snapshot_section *s = snapshot_image_find(&c->img, SNAP_TAG_CONFIG, 0);
    if (!s || snapshot_image_count(&c->img, SNAP_TAG_CONFIG) != 1)
        return wisp_err_set(err, EINVAL, "%s a configuration section (CONF)",
                            s ? "more than one" : "no");
    struct state_reader r;
    state_reader_init(&r, s->data, s->len);
    int ret = snapshot_config_read(cfg, &r, err);
    if (ret == 0 && c->p->vsock_uds_path) { /* a clone's own vsock socket */
        if (!cfg->vsock)
            return wisp_err_set(err, EINVAL, "vsock_override: the snapshot has no vsock device");
        ret = vm_config_set_string(cfg, &cfg->vsock_params.uds_path, c->p->vsock_uds_path, err);
        if (c->p->vsock_guest_cid) /* the restored driver reads it again at TRANSPORT_RESET */
            cfg->vsock_params.guest_cid = c->p->vsock_guest_cid;
    }
    return ret < 0 ? ret : apply_overrides(cfg, c->p, err);
}

static int read_vcpus(struct load_ctx *c, unsigned cpus, struct wisp_err *err)
{
    unsigned n = snapshot_image_count(&c->img, SNAP_TAG_VCPU);
    if (n != cpus)
        return wisp_err_set(err, EINVAL, "%u vCPU sections for a machine of %u vCPUs", n, cpus);
    if (!(c->vcpus = calloc(cpus, sizeof(*c->vcpus))))
        return wisp_err_set(err, ENOMEM, "out of memory");
    c->nr_vcpus = cpus;
    bool *seen = calloc(cpus, 1);
    int r = seen ? 0 : wisp_err_set(err, ENOMEM, "out of memory");
    for (unsigned k = 0; r == 0 && k < n; k++) {
        const struct snapshot_section *s = snapshot_image_find(&c->img, SNAP_TAG_VCPU, k);
        struct state_reader rd;
        state_reader_init(&rd, s->data, s->len);
        uint32_t i = state_get_u32(&rd);
        if (!rd.bad && (i >= cpus || seen[i])) {
            r = wisp_err_set(err, EINVAL, "vCPU section at byte %zu: vCPU %u %s", s->offset, i,
                             i >= cpus ? "does not exist" : "appears twice");
            break;
        }
        r = kvm_vcpu_state_read(&c->vcpus[i], &rd, err);
        if (r == 0 && (r = state_reader_done(&rd, "vCPU state", err)) < 0)
            kvm_vcpu_state_free(&c->vcpus[i]);
        if (r < 0) {
            wisp_err_wrap(err, "vCPU %u", i);
            break;
        }
        seen[i] = true;
    }
    free(seen);
    return r;
}

static int read_devices(struct load_ctx *c, struct wisp_err *err)
{
    unsigned n = snapshot_image_count(&c->img, SNAP_TAG_DEVICE) +
                 snapshot_image_count(&c->img, SNAP_TAG_DEVOPT);
    if (!(c->devices = calloc(n ? n : 1, sizeof(*c->devices))))
        return wisp_err_set(err, ENOMEM, "out of memory");
    for (unsigned i = 0, k = 0; i < c->img.nr_sections; i++) {
        const struct snapshot_section *s = &c->img.sections[i];
        if (s->tag != SNAP_TAG_DEVICE && s->tag != SNAP_TAG_DEVOPT)
            continue;
        struct device_image *d = &c->devices[k];
        state_reader_init(&d->state, s->data, s->len);
        bool is_null;
        d->name = state_get_str(&d->state, 64, &is_null);
        d->type = state_get_str(&d->state, 64, &is_null);
        if (!d->name || !d->type)
            return wisp_err_set(err, EINVAL, "device section at byte %zu: no name and type",
                                s->offset);
        for (unsigned j = 0; j < k; j++)
            if (!strcmp(c->devices[j].name, d->name))
                return wisp_err_set(err, EINVAL, "two device sections for %s", d->name);
        /* the rest is the device's own: a reader starting there */
        state_reader_init(&d->state, s->data + d->state.off, s->len - d->state.off);
        k++, c->nr_devices++;
    }
    return 0;
}

static int read_image(struct load_ctx *c, struct vm_config *cfg, struct wisp_err *err)
{
    int r = read_config(c, cfg, err);
    const struct snapshot_section *mem = snapshot_image_find(&c->img, SNAP_TAG_MEMORY, 0);
    const struct snapshot_section *vm = snapshot_image_find(&c->img, SNAP_TAG_VM, 0);
    if (r == 0 && (!mem || !vm))
        r = wisp_err_set(err, EINVAL, "no %s section", !mem ? "memory (MEMY)" : "VM (KVMV)");
    if (r == 0)
        r = snapshot_memory_read(mem, &c->mem, err);
    if (r == 0 && c->mem.total != cfg->mem_bytes)
        r = wisp_err_set(err, EINVAL, "memory: %llu bytes, the configuration says %llu",
                         (unsigned long long)c->mem.total, (unsigned long long)cfg->mem_bytes);
    struct state_reader rd;
    state_reader_init(&rd, vm ? vm->data : NULL, vm ? vm->len : 0);
    if (r == 0)
        r = kvm_vm_state_read(&c->vm, &rd, err);
    if (r == 0)
        r = read_vcpus(c, cfg->cpus, err);
    if (r == 0)
        r = read_devices(c, err);
    return r;
}

/* ---- building the machine (machine_restore) ------------------------------------------------ */

static int map_memory(void *opaque, struct guest_mem *mem, uint64_t bytes, struct wisp_err *err)
{
    struct load_ctx *c = opaque;
    const struct guest_mem_options policies = {.thp = c->v->cfg->mem.thp,
                                               .ksm = c->v->cfg->mem.ksm};
    int r = c->p->backend == SNAPSHOT_MEM_UFFD
                ? snapshot_uffd_map(mem, bytes, c->uffd_sock, &c->uffd, err)
                : guest_mem_create_from_file(mem, bytes, c->mem_fd, err);
    if (r == 0 && (r = guest_mem_apply_policies(mem, &policies, err)) < 0)
        guest_mem_destroy(mem);
    return r;
}

static int load_device(struct device *dev, struct device_image *d, struct wisp_err *err)
{
    if (strcmp(dev->ops->type, d->type))
        return wisp_err_set(err, EINVAL, "device %s is a %s here, a %s in the snapshot", d->name,
                            dev->ops->type, d->type);
    if (!dev->ops->load)
        return wisp_err_set(err, EINVAL, "device %s (%s) has no state to load", d->name, d->type);
    int r = dev->ops->load(dev, &d->state, err);
    if (r == 0)
        r = state_reader_done(&d->state, d->name, err);
    return r;
}

/* After every vCPU was restored: the in-kernel devices first (the IOAPIC's pins), then the
 * devices, which may raise their lines again. Every device with state must have its section (but
 * a type whose state is optional stays as reset() left it) and every section its device. */
static int restore_machine(void *opaque, struct machine *m, struct wisp_err *err)
{
    struct load_ctx *c = opaque;
    int r = kvm_vm_restore_state(&m->vm, &c->vm, c->p->clock_realtime, err);
    for (unsigned k = 0; r == 0 && k < c->nr_devices; k++) {
        struct device *dev = device_list_find(&m->devices, c->devices[k].name);
        r = dev ? load_device(dev, &c->devices[k], err)
                : wisp_err_set(err, EINVAL, "the snapshot has a device %s (%s) this machine lacks",
                               c->devices[k].name, c->devices[k].type);
    }
    for (unsigned i = 0; r == 0 && i < m->devices.nr; i++) {
        const struct device *dev = m->devices.items[i];
        bool found = false;
        for (unsigned k = 0; k < c->nr_devices && !found; k++)
            found = !strcmp(c->devices[k].name, dev->name);
        if (dev->ops->save && !dev->ops->save_optional && !found)
            r = wisp_err_set(err, EINVAL, "the snapshot lacks the state of device %s (%s)",
                             dev->name, dev->ops->type);
    }
    return r;
}

/* The backend named by mem_backend, opened before the machine is built. */
static int open_backend(struct load_ctx *c, struct wisp_err *err)
{
    const char *path = c->p->backend_path;
    if (c->p->backend == SNAPSHOT_MEM_UFFD) {
        c->uffd_sock = snapshot_uffd_connect(path, err);
        return c->uffd_sock < 0 ? c->uffd_sock : 0;
    }
    off_t size;
    c->mem_fd = wisp_open_regular("mem_backend: backend_path", path, &size, err);
    if (c->mem_fd < 0)
        return c->mem_fd;
    if ((uint64_t)size < c->mem.total)
        return wisp_err_set(err, EINVAL,
                            "mem_backend: backend_path: %s holds %lld bytes, the snapshot's "
                            "guest has %llu bytes of RAM (a truncated or wrong memory file)",
                            path, (long long)size, (unsigned long long)c->mem.total);
    return 0;
}

static void ctx_free(struct load_ctx *c)
{
    for (unsigned i = 0; c->vcpus && i < c->nr_vcpus; i++)
        kvm_vcpu_state_free(&c->vcpus[i]);
    free(c->vcpus);
    for (unsigned k = 0; k < c->nr_devices; k++) {
        free(c->devices[k].name);
        free(c->devices[k].type);
    }
    free(c->devices);
    snapshot_image_free(&c->img);
    if (c->mem_fd >= 0)
        close(c->mem_fd); /* the mappings keep the file */
}

static void uffd_socket_event(void *opaque, uint32_t events)
{
    struct vmm *v = opaque;
    char buf[64];
    ssize_t n = read(v->snap->uffd_sock, buf, sizeof(buf));
    if (n > 0 || (n < 0 && errno == EAGAIN))
        return; /* the handler has nothing to say to us: ignored */
    wisp_log("the page-fault handler closed its socket: the VM ends (its memory has no source)");
    evloop_source_remove(v->snap->uffd_src);
    v->snap->uffd_src = NULL;
    vmm_end(v, 1, "the Uffd handler went away");
}

/* Builds and starts the machine with the restore in place (vmm_start's checks included). */
static int build(struct load_ctx *c, struct vmm_snapshot *s, struct wisp_err *err)
{
    struct vmm *v = c->v;
    c->restore = (struct machine_restore){.map_memory = map_memory,
                                          .vcpus = c->vcpus,
                                          .restore_machine = restore_machine,
                                          .opaque = c};
    struct vm_config *host_cfg = v->cfg;
    v->cfg = &s->cfg;
    v->restore = &c->restore;
    v->start_paused = !c->p->resume_vm;
    bool usage;
    int r = vmm_start(v, &usage, err);
    v->restore = NULL;
    v->start_paused = false;
    if (r < 0) {
        v->cfg = host_cfg;
        return r;
    }
    s->ram = c->p->backend == SNAPSHOT_MEM_UFFD ? SNAPSHOT_RAM_UFFD : SNAPSHOT_RAM_FILE;
    if (c->p->backend == SNAPSHOT_MEM_UFFD) {
        s->uffd = c->uffd;
        s->uffd_sock = c->uffd_sock;
        c->uffd_sock = -1;
        (void)evloop_add_fd(v->loop, s->uffd_sock, EPOLLIN | EPOLLRDHUP, uffd_socket_event, v,
                            &s->uffd_src, NULL);
    }
    return 0;
}

int vmm_snapshot_load(struct vmm *v, const struct snapshot_load_params *p, struct wisp_err *err)
{
    int r = check_fresh(v, err);
    if (r == 0)
        r = check_params(p, err);
    struct vmm_snapshot *s = r < 0 ? NULL : vmm_snapshot_get(v, err);
    if (!s)
        return r < 0 ? r : -ENOMEM;
    struct load_ctx c = {.v = v, .p = p, .mem_fd = -1, .uffd_sock = -1, .uffd = -1};
    r = snapshot_image_read(&c.img, p->snapshot_path, err);
    if (r < 0) {
        ctx_free(&c);
        return r;
    }
    s->have_cfg = true; /* vm_config_free() from here on */
    r = read_image(&c, &s->cfg, err);
    if (r < 0)
        load_fail(&c, err);
    if (r == 0)
        r = open_backend(&c, err);
    if (r == 0 && (r = build(&c, s, err)) < 0)
        load_fail(&c, err);
    if (r < 0) {
        if (c.uffd >= 0)
            close(c.uffd);
        vm_config_free(&s->cfg);
        s->have_cfg = false;
    }
    if (c.uffd_sock >= 0)
        close(c.uffd_sock);
    ctx_free(&c);
    /* the file's bytes and the parsed states are freed: a clone keeps none of those pages */
    malloc_trim(0);
    return r;
}
