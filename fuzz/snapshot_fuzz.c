/* libFuzzer target: the snapshot state file as PUT /snapshot/load reads it (docs/snapshot.md),
 * from any bytes: the header, version and checksum, the sections, and the reader of every
 * section (configuration, memory, VM, vCPUs, the UART's and virtqueues' state), none of which
 * may crash, hang or read outside its input. The checksum would stop almost every mutation at
 * the door: an input whose first byte is odd gets a correct CRC-32 written over its last four
 * bytes first, so that half the runs reach the sections. Seeds: fuzz/corpus/snapshot. */
#include <endian.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "devices/serial.h"
#include "kvm/state.h"
#include "virtio/virtq.h"
#include "vmm/snapshot_int.h"

static void read_device(const struct snapshot_section *s)
{
    struct state_reader r;
    state_reader_init(&r, s->data, s->len);
    bool is_null;
    char *name = state_get_str(&r, 64, &is_null), *type = state_get_str(&r, 64, &is_null);
    if (type && !strcmp(type, "serial")) {
        struct serial_backend be = {0};
        struct serial *uart = serial_create(&be);
        if (uart && serial_load(uart, &r, NULL) == 0)
            (void)state_reader_done(&r, "serial", NULL);
        serial_destroy(uart);
    } else if (type) { /* a virtio device: the transport's header, then its queues */
        for (int i = 0; i < 9; i++)
            (void)state_get_u32(&r);
        struct virtq q = {0};
        for (unsigned i = 0; i < 4 && !r.bad; i++)
            virtq_load(&q, 256, &r);
    }
    free(name);
    free(type);
}

static void read_sections(const struct snapshot_image *img)
{
    for (unsigned i = 0; i < img->nr_sections; i++) {
        const struct snapshot_section *s = &img->sections[i];
        struct state_reader r;
        state_reader_init(&r, s->data, s->len);
        if (s->tag == SNAP_TAG_CONFIG) {
            struct vm_config cfg;
            vm_config_init(&cfg);
            (void)snapshot_config_read(&cfg, &r, NULL);
            vm_config_free(&cfg);
        } else if (s->tag == SNAP_TAG_MEMORY) {
            struct snapshot_memory_info m;
            if (snapshot_memory_read(s, &m, NULL) == 0 && m.type == SNAPSHOT_DIFF)
                (void)snapshot_memory_page_dirty(&m, 0, 0);
        } else if (s->tag == SNAP_TAG_VM) {
            struct kvm_vm_state vm;
            (void)kvm_vm_state_read(&vm, &r, NULL);
        } else if (s->tag == SNAP_TAG_VCPU) {
            struct kvm_vcpu_state v;
            (void)state_get_u32(&r);
            if (kvm_vcpu_state_read(&v, &r, NULL) == 0)
                kvm_vcpu_state_free(&v);
        } else if (s->tag == SNAP_TAG_DEVICE || s->tag == SNAP_TAG_DEVOPT) {
            read_device(s);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    if (size >= 8 && (buf[0] & 1)) { /* a checksum that matches (see above) */
        buf[0] = 'W';
        uint32_t crc = htole32((uint32_t)crc32(0L, buf, (uInt)(size - 4)));
        memcpy(buf + size - 4, &crc, 4);
    }
    struct snapshot_image img;
    if (snapshot_image_parse(&img, buf, size, "fuzz", NULL) == 0) { /* takes buf */
        read_sections(&img);
        snapshot_image_free(&img);
    }
    return 0;
}
