/* Metrics lines (metrics.h). Firecracker's counters are the change since the previous line;
 * these are too: block_<id> and net_<id> per device, "block" and "net" summed over them. The
 * line goes through a chardev (an outbuf and its writer thread), so that a FIFO whose reader
 * stalls holds up nothing. */
#include "vmm/metrics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/chardev.h"
#include "common/evloop.h"
#include "virtio/balloon.h"
#include "virtio/blk.h"
#include "virtio/net.h"
#include "virtio/pmem.h"
#include "vmm/api.h"
#include "vmm/vmm.h"

#define METRICS_PERIOD_NS (60ull * 1000000000ull) /* Firecracker's */
#define METRICS_FLUSH_MS  200

struct vmm_metrics {
    struct vmm *v;
    struct chardev *out;
    struct evloop_source *timer;
    struct virtio_blk_stats blk_last[VMM_MAX_DRIVES];
    struct virtio_net_stats net_last[VMM_MAX_NICS];
    struct virtio_pmem_info pmem_last[VMM_MAX_PMEM];
    uint64_t lines, dropped;
};

static void add(json_t *o, const char *key, uint64_t v)
{
    json_t *old = json_object_get(o, key);
    uint64_t sum = v + (old ? (uint64_t)json_integer_value(old) : 0);
    json_object_set_new(o, key, json_integer((json_int_t)(sum > INT64_MAX ? INT64_MAX : sum)));
}

/* The change since `last` (updated), or with last NULL the counts since the start. */
static void block_metrics(struct vmm *v, struct virtio_blk_stats *last, json_t *line, json_t *total)
{
    const struct vm_config *cfg = v->cfg;
    for (unsigned i = 0; i < cfg->nr_drives; i++) {
        char name[16], key[64];
        const char *id = vm_drive_name(cfg, i, name, sizeof(name));
        struct device *dev = device_list_find(&v->m.devices, id);
        if (!dev)
            continue;
        struct virtio_blk_stats s, zero = {0}, *l = last ? &last[i] : &zero;
        virtio_blk_get_stats(dev, &s);
        json_t *o = json_object();
        const struct {
            const char *key;
            uint64_t now, last;
        } c[] = {{"read_count", s.read_count, l->read_count},
                 {"read_bytes", s.read_bytes, l->read_bytes},
                 {"write_count", s.write_count, l->write_count},
                 {"write_bytes", s.write_bytes, l->write_bytes},
                 {"flush_count", s.flush_count, l->flush_count}};
        for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
            add(o, c[k].key, c[k].now - c[k].last);
            add(total, c[k].key, c[k].now - c[k].last);
        }
        *l = s;
        snprintf(key, sizeof(key), "block_%s", id);
        json_object_set_new(line, key, o);
    }
}

static void net_metrics(struct vmm *v, struct virtio_net_stats *last, json_t *line, json_t *total)
{
    const struct vm_config *cfg = v->cfg;
    for (unsigned i = 0; i < cfg->nr_nics; i++) {
        char name[16], key[64];
        const char *id = vm_nic_name(cfg, i, name, sizeof(name));
        struct device *dev = device_list_find(&v->m.devices, id);
        if (!dev)
            continue;
        struct virtio_net_stats s, zero = {0}, *l = last ? &last[i] : &zero;
        virtio_net_get_stats(dev, &s);
        json_t *o = json_object();
        const struct {
            const char *key;
            uint64_t now, last;
        } c[] = {{"rx_packets_count", s.rx_frames, l->rx_frames},
                 {"rx_bytes_count", s.rx_bytes, l->rx_bytes},
                 {"rx_dropped", s.rx_dropped, l->rx_dropped},
                 {"tx_packets_count", s.tx_frames, l->tx_frames},
                 {"tx_bytes_count", s.tx_bytes, l->tx_bytes},
                 {"tx_dropped", s.tx_dropped, l->tx_dropped}};
        for (size_t k = 0; k < sizeof(c) / sizeof(c[0]); k++) {
            add(o, c[k].key, c[k].now - c[k].last);
            add(total, c[k].key, c[k].now - c[k].last);
        }
        *l = s;
        snprintf(key, sizeof(key), "net_%s", id);
        json_object_set_new(line, key, o);
    }
}

/* Each pmem device: its mode and region, and the change in its flush requests and dropped
 * writes (an ro region's) since the previous line. */
static void pmem_metrics(struct vmm *v, struct virtio_pmem_info *last, json_t *line)
{
    const struct vm_config *cfg = v->cfg;
    for (unsigned i = 0; i < cfg->nr_pmems; i++) {
        char name[40], key[64];
        const char *id = vm_pmem_name(cfg, i, name, sizeof(name));
        struct device *dev = device_list_find(&v->m.devices, id);
        if (!dev)
            continue;
        struct virtio_pmem_info s, zero = {0}, *l = last ? &last[i] : &zero;
        virtio_pmem_get_info(dev, &s);
        snprintf(key, sizeof(key), "pmem_%s", id);
        json_object_set_new(line, key,
                            json_pack("{s:s,s:I,s:I,s:I}", "mode",
                                      virtio_pmem_mode_name(cfg->pmems[i].mode), "size_mib",
                                      (json_int_t)(s.size >> 20), "flushes",
                                      (json_int_t)(s.flushes - l->flushes), "dropped_writes",
                                      (json_int_t)(s.dropped_writes - l->dropped_writes)));
        *l = s;
    }
}

/* Guest RAM: its backend and policies (docs/memory.md), and the process's resident memory
 * (VmRSS, guest RAM and the VMM's own, from /proc/self/statm). */
static json_t *memory_metrics(const struct vm_config *cfg)
{
    const struct guest_mem_options *m = &cfg->mem;
    unsigned long long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f) {
        if (fscanf(f, "%llu %llu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return json_pack("{s:s,s:s,s:b,s:b,s:I,s:I}", "backend", guest_mem_backend_name(m->backend),
                     "thp", guest_mem_switch_name(m->thp), "ksm", m->ksm, "prefault", m->prefault,
                     "guest_mib", (json_int_t)(cfg->mem_bytes >> 20), "rss_kib",
                     (json_int_t)(resident * 4));
}

/* The balloon, when the VM has one (docs/memory.md): its target and the guest's actual size now
 * (not counters), so that a metrics reader sees what the balloon holds back. */
static void balloon_metrics(struct vmm *v, json_t *line)
{
    struct device *dev = v->cfg->balloon ? device_list_find(&v->m.devices, "balloon0") : NULL;
    if (!dev)
        return;
    struct virtio_balloon_stats s;
    virtio_balloon_get_stats(dev, &s);
    json_object_set_new(line, "balloon",
                        json_pack("{s:I,s:I}", "target_mib", (json_int_t)(s.target_pages >> 8),
                                  "actual_mib", (json_int_t)(s.actual_pages >> 8)));
}

static json_t *metrics_line(struct vmm_metrics *mt)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    json_t *line = json_object(), *block = json_object(), *net = json_object();
    json_object_set_new(line, "utc_timestamp_ms",
                        json_integer((json_int_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000));
    if (mt->v->have_machine) {
        block_metrics(mt->v, mt->blk_last, line, block);
        net_metrics(mt->v, mt->net_last, line, net);
        pmem_metrics(mt->v, mt->pmem_last, line);
        balloon_metrics(mt->v, line);
    }
    json_object_set_new(line, "block", block);
    json_object_set_new(line, "net", net);
    json_object_set_new(line, "memory", memory_metrics(mt->v->cfg));
    json_object_set_new(line, "wisp",
                        json_pack("{s:s,s:I,s:I}", "state", vmm_state_name(mt->v->state), "lines",
                                  (json_int_t)mt->lines, "lines_dropped", (json_int_t)mt->dropped));
    return line;
}

json_t *vmm_metrics_totals(struct vmm *v)
{
    json_t *line = json_object(), *block = json_object(), *net = json_object();
    if (v->have_machine) {
        block_metrics(v, NULL, line, block);
        net_metrics(v, NULL, line, net);
        pmem_metrics(v, NULL, line);
        balloon_metrics(v, line);
    }
    json_object_set_new(line, "block", block);
    json_object_set_new(line, "net", net);
    json_object_set_new(line, "memory", memory_metrics(v->cfg));
    json_object_set_new(line, "state", json_string(vmm_state_name(v->state)));
    return line;
}

int vmm_metrics_flush(struct vmm_metrics *mt, struct wisp_err *err)
{
    mt->lines++; /* this line's number */
    json_t *line = metrics_line(mt);
    char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
    json_decref(line);
    if (!text)
        return wisp_err_set(err, ENOMEM, "metrics: out of memory");
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps's NUL becomes the line's end */
    if (chardev_write_room(mt->out) < len + 1)
        mt->dropped++; /* whole lines or nothing */
    else
        (void)chardev_write(mt->out, text, len + 1);
    free(text);
    return 0;
}

static void metrics_timer(void *opaque)
{
    (void)vmm_metrics_flush(opaque, NULL);
}

int vmm_metrics_start(struct vmm_metrics **out, struct vmm *v, const char *path,
                      struct wisp_err *err)
{
    struct vmm_metrics *mt = calloc(1, sizeof(*mt));
    if (!mt)
        return wisp_err_set(err, ENOMEM, "metrics: out of memory");
    mt->v = v;
    int r = chardev_open(&mt->out, CHARDEV_FILE, path, "metrics: metrics_path", err);
    if (r == 0)
        r = evloop_add_timer(v->loop, metrics_timer, mt, &mt->timer, err);
    if (r == 0)
        r = evloop_timer_arm(mt->timer, METRICS_PERIOD_NS, METRICS_PERIOD_NS);
    if (r < 0) {
        evloop_source_remove(mt->timer);
        chardev_close(mt->out);
        free(mt);
        return r;
    }
    *out = mt;
    return 0;
}

void vmm_metrics_stop(struct vmm_metrics *mt)
{
    if (!mt)
        return;
    (void)vmm_metrics_flush(mt, NULL);
    chardev_flush(mt->out, METRICS_FLUSH_MS);
    evloop_source_remove(mt->timer);
    chardev_close(mt->out);
    free(mt);
}
