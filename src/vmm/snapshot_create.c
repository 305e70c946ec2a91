/*
 * PUT /snapshot/create (docs/snapshot.md). The main thread only checks the request and starts a
 * worker thread ("snapshot"), which does the rest, so that nothing here blocks the main loop:
 * it quiesces every device (a drive waits for its requests and flushes), takes the state of
 * every vCPU on the vCPU's own thread (machine_on_each_vcpu), of the in-kernel devices and of
 * every device, writes the state file and the memory file under temporary names, renames them
 * when both are complete, lets the devices go on, and posts the result to the main loop. The
 * VM stays paused throughout (vmm_resume refuses while vmm_snapshot_busy()); if it ends, the
 * worker is cancelled and joined by vmm_snapshot_cancel() before the machine goes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/io.h"
#include "common/log.h"
#include "common/thread_kind.h"
#include "kvm/state.h"
#include "vmm/snapshot_int.h"
#include "vmm/vmm.h"
#include "wisp-config.h"

struct snapshot_create_job {
    struct vmm *v;
    enum snapshot_type type;
    char *state_path, *mem_path, *state_tmp, *mem_tmp;
    int state_fd;
    struct state_writer state;              /* the state file's bytes */
    struct snapshot_mem_job mem;            /* the memory file */
    uint64_t *taken[GUEST_MEM_MAX_REGIONS]; /* dirty pages taken (given back on failure) */
    pthread_t thread;
    int result;
    struct wisp_err err;
    struct evloop_call done_call;
    snapshot_done_fn done;
    void *opaque;
};

/* What the vCPU threads fill in (machine_on_each_vcpu). */
struct vcpu_capture {
    struct machine *m;
    struct kvm_vcpu_state *states;
    int *results;
    struct wisp_err *errs;
};

static void capture_vcpu(struct vcpu *vcpu, void *arg)
{
    struct vcpu_capture *c = arg;
    unsigned i = vcpu->index;
    c->results[i] = kvm_vcpu_save_state(vcpu, &c->m->kvm, &c->states[i], &c->errs[i]);
}

static int capture_vcpus(struct machine *m, struct state_writer *w, struct wisp_err *err)
{
    unsigned n = m->nr_vcpus;
    struct vcpu_capture c = {.m = m,
                             .states = calloc(n, sizeof(*c.states)),
                             .results = calloc(n, sizeof(*c.results)),
                             .errs = calloc(n, sizeof(*c.errs))};
    int r = c.states && c.results && c.errs ? 0 : wisp_err_set(err, ENOMEM, "out of memory");
    for (unsigned i = 0; r == 0 && i < n; i++)
        c.results[i] = -ESRCH; /* a vCPU that is not parked does not answer */
    if (r == 0 && machine_on_each_vcpu(m, capture_vcpu, &c) < 0)
        r = wisp_err_set(err, ESHUTDOWN, "the VM is ending");
    for (unsigned i = 0; r == 0 && i < n; i++) {
        if (c.results[i] == -ESRCH)
            r = wisp_err_set(err, ESRCH, "vCPU %u is not parked (it stopped)", i);
        else if (c.results[i] < 0) {
            *err = c.errs[i];
            r = c.results[i];
        }
    }
    for (unsigned i = 0; r == 0 && i < n; i++) {
        size_t at = snapshot_section_begin(w, SNAP_TAG_VCPU, 0);
        state_put_u32(w, i);
        kvm_vcpu_state_write(&c.states[i], w);
        snapshot_section_end(w, at);
    }
    for (unsigned i = 0; c.states && i < n; i++)
        kvm_vcpu_state_free(&c.states[i]);
    free(c.states);
    free(c.results);
    free(c.errs);
    return r;
}

static int capture_devices(struct machine *m, struct state_writer *w, struct wisp_err *err)
{
    for (unsigned i = 0; i < m->devices.nr; i++) {
        struct device *dev = m->devices.items[i];
        if (!dev->realized || !dev->ops->save)
            continue;
        size_t at = dev->ops->save_optional
                        ? snapshot_section_begin(w, SNAP_TAG_DEVOPT, SNAP_SECTION_OPTIONAL)
                        : snapshot_section_begin(w, SNAP_TAG_DEVICE, 0);
        state_put_str(w, dev->name);
        state_put_str(w, dev->ops->type);
        int r = dev->ops->save(dev, w, err);
        if (r < 0)
            return r;
        snapshot_section_end(w, at);
    }
    return 0;
}

/* The pages written since the last snapshot (KVM's log and the VMM's own), taken now: a full
 * snapshot under dirty tracking takes them too, so that the next diff starts from it. */
static int take_dirty(struct snapshot_create_job *job, struct wisp_err *err)
{
    struct vm *vm = &job->v->m.vm;
    if (!vm->dirty_log)
        return 0;
    for (unsigned i = 0; i < vm->mem.nr_regions; i++) {
        job->taken[i] = calloc(guest_mem_bitmap_words(&vm->mem, i), sizeof(uint64_t));
        if (!job->taken[i])
            return wisp_err_set(err, ENOMEM, "out of memory for the dirty-page bitmap");
        int r = kvm_vm_get_dirty_log(vm, i, job->taken[i], err);
        guest_mem_take_dirty(&vm->mem, i, job->taken[i]);
        if (r < 0)
            return r;
        if (job->type == SNAPSHOT_DIFF)
            job->mem.dirty[i] = job->taken[i];
    }
    return 0;
}

static void put_info(struct state_writer *w)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    size_t at = snapshot_section_begin(w, SNAP_TAG_INFO, SNAP_SECTION_OPTIONAL);
    state_put_str(w, "wisp-vmm " WISP_VERSION);
    state_put_u64(w, (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec);
    snapshot_section_end(w, at);
}

/* Everything but guest memory, into job->state (main thread, vCPUs parked, devices quiet). */
static int capture(struct snapshot_create_job *job, struct wisp_err *err)
{
    struct vmm *v = job->v;
    struct machine *m = &v->m;
    struct state_writer *w = &job->state;
    snapshot_file_begin(w);
    put_info(w);
    size_t at = snapshot_section_begin(w, SNAP_TAG_CONFIG, 0);
    int r = snapshot_config_write(v->cfg, m, w, err);
    snapshot_section_end(w, at);
    if (r == 0)
        r = capture_vcpus(m, w, err);
    struct kvm_vm_state vms;
    if (r == 0)
        r = kvm_vm_save_state(&m->vm, &vms, err);
    if (r == 0) {
        at = snapshot_section_begin(w, SNAP_TAG_VM, 0);
        kvm_vm_state_write(&vms, w);
        snapshot_section_end(w, at);
        r = capture_devices(m, w, err);
    }
    if (r == 0)
        r = take_dirty(job, err);
    if (r == 0) {
        at = snapshot_section_begin(w, SNAP_TAG_MEMORY, 0);
        snapshot_memory_write(&m->vm.mem, job->type, job->mem.dirty, w);
        snapshot_section_end(w, at);
        snapshot_file_finish(w);
        r = state_writer_error(w, "snapshot", err);
    }
    return r;
}

static void job_free(struct snapshot_create_job *job)
{
    if (job->state_fd >= 0)
        close(job->state_fd);
    if (job->mem.fd >= 0)
        close(job->mem.fd);
    if (job->state_tmp)
        unlink(job->state_tmp); /* nothing once renamed */
    if (job->mem_tmp)
        unlink(job->mem_tmp);
    for (unsigned i = 0; i < GUEST_MEM_MAX_REGIONS; i++)
        free(job->taken[i]);
    state_writer_free(&job->state);
    free(job->state_path);
    free(job->mem_path);
    free(job->state_tmp);
    free(job->mem_tmp);
    free(job);
}

/* The pages a failed snapshot took count for the next one again. */
static void give_back_dirty(struct snapshot_create_job *job)
{
    const struct guest_mem *mem = &job->v->m.vm.mem;
    for (unsigned i = 0; i < mem->nr_regions; i++)
        if (job->taken[i])
            guest_mem_put_dirty(mem, i, job->taken[i]);
}

/* Main loop: the worker finished. */
static void create_done(void *opaque)
{
    struct snapshot_create_job *job = opaque;
    struct vmm *v = job->v;
    pthread_join(job->thread, NULL);
    v->snap->job = NULL;
    snapshot_done_fn done = job->done;
    void *done_opaque = job->opaque;
    int result = job->result;
    struct wisp_err err = job->err;
    job_free(job);
    if (done)
        done(done_opaque, result, &err);
}

static int rename_done(const char *tmp, const char *path, const char *what, struct wisp_err *err)
{
    if (rename(tmp, path) < 0)
        return wisp_err_sys(err, errno, "%s: %s", what, path);
    return 0;
}

/* Worker: both files under their final names, or neither. */
static int write_files(struct snapshot_create_job *job, struct wisp_err *err)
{
    int r = wisp_write_all(job->state_fd, job->state.buf, job->state.len);
    if (r < 0)
        return wisp_err_sys(err, -r, "snapshot_path: %s: write", job->state_tmp);
    r = snapshot_mem_write(&job->mem, err);
    if (r == 0) /* memory first: a state file under its name means a complete snapshot */
        r = rename_done(job->mem_tmp, job->mem_path, "mem_file_path", err);
    if (r < 0)
        return r;
    free(job->mem_tmp);
    job->mem_tmp = NULL;
    r = rename_done(job->state_tmp, job->state_path, "snapshot_path", err);
    if (r < 0) {
        unlink(job->mem_path);
        return r;
    }
    free(job->state_tmp);
    job->state_tmp = NULL;
    return 0;
}

/* A new file next to `path`, renamed to it when complete: the directory must exist. */
static int open_tmp(const char *what, const char *path, char **tmp, struct wisp_err *err)
{
    if (asprintf(tmp, "%s.tmp-%d", path, (int)getpid()) < 0) {
        *tmp = NULL;
        return wisp_err_set(err, ENOMEM, "out of memory");
    }
    int fd = open(*tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int e = errno;
        free(*tmp);
        *tmp = NULL;
        return wisp_err_sys(err, e, "%s: cannot create %s", what, path);
    }
    return fd;
}

static void *create_worker(void *opaque)
{
    struct snapshot_create_job *job = opaque;
    struct wisp_err *err = &job->err;
    struct machine *m = &job->v->m;
    wisp_thread_enter(WISP_THREAD_SNAPSHOT, "snapshot");
    int r = (job->state_fd = open_tmp("snapshot_path", job->state_path, &job->state_tmp, err));
    if (r >= 0)
        r = (job->mem.fd = open_tmp("mem_file_path", job->mem_path, &job->mem_tmp, err));
    if (r >= 0)
        r = device_list_quiesce(&m->devices, err);
    if (r == 0) {
        r = capture(job, err);
        if (r == 0)
            r = write_files(job, err);
        device_list_resume(&m->devices);
    }
    if (r < 0)
        give_back_dirty(job);
    job->result = r < 0 ? r : 0;
    evloop_call_async(job->v->loop, &job->done_call);
    return NULL;
}

static int check_create(const struct vmm *v, const struct snapshot_create_params *p,
                        struct wisp_err *err)
{
    if (v->state != VMM_PAUSED || v->pause_pending)
        return wisp_err_set(err, EINVAL,
                            "the VM is %s: a snapshot is taken of a paused VM (PATCH /vm with "
                            "{\"state\": \"Paused\"} first)",
                            v->pause_pending ? "pausing" : vmm_state_name(v->state));
    if (vmm_snapshot_busy(v))
        return wisp_err_set(err, EBUSY, "a snapshot is already being written");
    if (v->m.qtest)
        return wisp_err_set(err, ENOTSUP, "no snapshots under --test-socket");
    if (!p->snapshot_path || !*p->snapshot_path)
        return wisp_err_set(err, EINVAL, "snapshot_path: missing");
    if (!p->mem_file_path || !*p->mem_file_path)
        return wisp_err_set(err, EINVAL, "mem_file_path: missing");
    if (!strcmp(p->snapshot_path, p->mem_file_path))
        return wisp_err_set(err, EINVAL, "snapshot_path and mem_file_path are the same file");
    if (p->type == SNAPSHOT_DIFF && !v->m.vm.dirty_log)
        return wisp_err_set(err, EINVAL,
                            "snapshot_type Diff: dirty page tracking is off (track_dirty_pages "
                            "in machine-config before boot, or in snapshot/load)");
    return 0;
}

int vmm_snapshot_create(struct vmm *v, const struct snapshot_create_params *p,
                        snapshot_done_fn done, void *opaque, struct wisp_err *err)
{
    int r = check_create(v, p, err);
    struct vmm_snapshot *s = r < 0 ? NULL : vmm_snapshot_get(v, err);
    if (!s)
        return r < 0 ? r : -ENOMEM;
    struct snapshot_create_job *job = calloc(1, sizeof(*job));
    if (!job)
        return wisp_err_set(err, ENOMEM, "out of memory");
    *job = (struct snapshot_create_job){
        .v = v, .type = p->type, .state_fd = -1, .done = done, .opaque = opaque};
    job->mem = (struct snapshot_mem_job){.mem = &v->m.vm.mem, .kind = s->ram, .fd = -1};
    job->done_call = (struct evloop_call){.fn = create_done, .opaque = job};
    job->state_path = strdup(p->snapshot_path);
    job->mem_path = strdup(p->mem_file_path);
    if (!job->state_path || !job->mem_path)
        r = wisp_err_set(err, ENOMEM, "out of memory");
    int e = r < 0 ? 0 : wisp_thread_create(&job->thread, NULL, create_worker, job);
    if (e)
        r = wisp_err_sys(err, e, "cannot start the snapshot's thread");
    if (r < 0) {
        job_free(job);
        return r;
    }
    pthread_setname_np(job->thread, "snapshot");
    s->job = job;
    return 0;
}

bool vmm_snapshot_busy(const struct vmm *v)
{
    return v->snap && v->snap->job;
}

void vmm_snapshot_cancel(struct vmm *v)
{
    struct snapshot_create_job *job = v->snap ? v->snap->job : NULL;
    if (!job)
        return;
    atomic_store(&job->mem.cancel, true);
    pthread_join(job->thread, NULL);
    evloop_call_cancel(v->loop, &job->done_call);
    if (job->result == 0) /* it finished: the files are complete, keep them */
        wisp_log("the snapshot %s was written as the VM ended", job->state_path);
    job_free(job);
    v->snap->job = NULL;
}
