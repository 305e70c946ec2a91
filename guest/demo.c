/* The demo guest: says hello, lists the CPUs it brought up and the memory map it was given,
 * then its virtio devices: it reads the first sector of a disk and prints the text there, and
 * sends one ARP request on a NIC. */
#include "guest.h"
#include "virtio.h"

#define VIRTIO_ID_NET 1
#define VIRTIO_ID_BLK 2

/* virtio-blk (virtio 1.2 §5.2.6): one read of sector 0 into buf; returns the status byte. */
static int demo_blk_read(struct gvirtio_dev *d, uint8_t *buf)
{
    if (!gvirtio_init(d, 0))
        return -1;
    static struct gvirtq q;
    if (!gvirtq_setup(d, &q, 0, 8))
        return -1;
    gvirtio_driver_ok(d);
    static struct {
        uint32_t type, reserved;
        uint64_t sector;
    } hdr = {0, 0, 0}; /* VIRTIO_BLK_T_IN */
    static uint8_t status = 0xff;
    struct gbuf bufs[3] = {{&hdr, sizeof(hdr)}, {buf, 512}, {&status, 1}};
    uint16_t head;
    uint32_t len;
    if (gvirtq_add(&q, bufs, 1, 2) < 0)
        return -1;
    gvirtq_kick(&q);
    return gvirtq_wait_used(&q, &head, &len, 5000) ? status : -1;
}

static void demo_blk(void)
{
    struct gvirtio_dev d;
    if (!gvirtio_find(VIRTIO_ID_BLK, 0, &d))
        return;
    uint64_t sectors = gvirtio_config64(&d, 0);
    static uint8_t sector[513];
    int st = demo_blk_read(&d, sector);
    guest_printf("virtio-blk at 0x%lx: %lu KiB; ", (unsigned long)d.base,
                 (unsigned long)(sectors / 2));
    if (st != 0) {
        guest_printf("reading sector 0 failed (status %d)\n", st);
        return;
    }
    unsigned n = 0;
    while (n < 512 && sector[n] >= 0x20 && sector[n] < 0x7f)
        n++;
    sector[n] = 0;
    guest_printf("sector 0 says: \"%s\"\n", (const char *)sector);
}

/* virtio-net (virtio 1.2 §5.1.6): the MAC from config space, one ARP request (who has
 * 198.51.100.1?) with a zero vnet header on the transmit queue. */
static void demo_net(void)
{
    struct gvirtio_dev d;
    if (!gvirtio_find(VIRTIO_ID_NET, 0, &d) || !gvirtio_init(&d, 1ull << 5 /* F_MAC */))
        return;
    static struct gvirtq rx, tx;
    if (!gvirtq_setup(&d, &rx, 0, 8) || !gvirtq_setup(&d, &tx, 1, 8))
        return;
    gvirtio_driver_ok(&d);
    uint8_t mac[6];
    for (unsigned i = 0; i < 6; i++)
        mac[i] = gvirtio_config8(&d, i);
    static uint8_t frame[12 + 42];
    uint8_t *f = frame + 12; /* virtio_net_hdr_v1: all zero, one buffer */
    memset(f, 0xff, 6);      /* broadcast */
    memcpy(f + 6, mac, 6);
    static const uint8_t arp[] = {0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1};
    memcpy(f + 12, arp, sizeof(arp));
    memcpy(f + 22, mac, 6);
    static const uint8_t ips[] = {198, 51, 100, 2, 0, 0, 0, 0, 0, 0, 198, 51, 100, 1};
    memcpy(f + 28, ips, sizeof(ips));
    struct gbuf b = {frame, sizeof(frame)};
    uint16_t head;
    uint32_t len;
    bool sent = gvirtq_add(&tx, &b, 1, 0) >= 0;
    if (sent) {
        gvirtq_kick(&tx);
        sent = gvirtq_wait_used(&tx, &head, &len, 5000);
    }
    guest_printf("virtio-net at 0x%lx: MAC %02x:%02x:%02x:%02x:%02x:%02x, %s\n",
                 (unsigned long)d.base, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5],
                 sent ? "sent an ARP request for 198.51.100.1" : "could not send");
}

static const char *e820_type_name(uint32_t type)
{
    switch (type) {
    case 1:
        return "RAM";
    case 2:
        return "reserved";
    case 3:
        return "ACPI tables";
    case 4:
        return "ACPI NVS";
    case 5:
        return "unusable";
    default:
        return "other";
    }
}

void guest_main(void)
{
    guest_printf(
        "\nHello from a wisp guest! This test body runs in ring 3 of a KVM virtual machine.\n");
    const char *cmdline = guest_cmdline();
    guest_printf("command line: \"%s\"\n", cmdline);

    unsigned described = guest_cpu_count();
    unsigned online = guest_smp_boot(2000);
    guest_printf("CPUs: %u described by the firmware tables, %u online:", described, online);
    for (unsigned i = 0; i < online; i++)
        guest_printf(" cpu%u=apic%u", i, guest_cpu_apic_id(i));
    guest_printf("\n");

    uint64_t ram = 0;
    guest_printf("memory map (%u entries):\n", guest_memmap_count());
    for (unsigned i = 0; i < guest_memmap_count(); i++) {
        const struct guest_memmap_entry *e = guest_memmap(i);
        guest_printf("  [0x%012lx - 0x%012lx) %s\n", (unsigned long)e->addr,
                     (unsigned long)(e->addr + e->size), e820_type_name(e->type));
        if (e->type == 1)
            ram += e->size;
    }
    guest_printf("%lu KiB of RAM.\n", (unsigned long)(ram >> 10));
    demo_blk();
    demo_net();
    guest_printf("Bye!\n");
    guest_pass();
}
