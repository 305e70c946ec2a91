/* The test guests' virtio-mmio driver (see virtio.h). */
#include "virtio.h"

#include "guest.h"

#define REG_MAGIC            0x000
#define REG_VERSION          0x004
#define REG_DEVICE_ID        0x008
#define REG_DEVICE_FEATURES  0x010
#define REG_DEVICE_FEAT_SEL  0x014
#define REG_DRIVER_FEATURES  0x020
#define REG_DRIVER_FEAT_SEL  0x024
#define REG_QUEUE_SEL        0x030
#define REG_QUEUE_NUM_MAX    0x034
#define REG_QUEUE_NUM        0x038
#define REG_QUEUE_READY      0x044
#define REG_QUEUE_NOTIFY     0x050
#define REG_STATUS           0x070
#define REG_QUEUE_DESC_LOW   0x080
#define REG_QUEUE_DESC_HIGH  0x084
#define REG_QUEUE_AVAIL_LOW  0x090
#define REG_QUEUE_AVAIL_HIGH 0x094
#define REG_QUEUE_USED_LOW   0x0a0
#define REG_QUEUE_USED_HIGH  0x0a4
#define REG_CONFIG           0x100

#define STATUS_ACK         1
#define STATUS_DRIVER      2
#define STATUS_DRIVER_OK   4
#define STATUS_FEATURES_OK 8
#define F_VERSION_1        32

#define IOAPIC_BASE 0xfec00000ull
#define LAPIC_BASE  0xfee00000ull

/* ---- memory pool ---------------------------------------------------------------------- */

static uint8_t pool[2 << 20] __attribute__((aligned(4096)));
static uint64_t pool_used;

void *gvirtio_alloc(uint64_t size, uint64_t align)
{
    uint64_t off = (pool_used + align - 1) & ~(align - 1);
    if (off + size > sizeof(pool))
        guest_fail(__FILE__, __LINE__, "virtio pool exhausted (%lu bytes asked)",
                   (unsigned long)size);
    pool_used = off + size;
    memset(pool + off, 0, size);
    return pool + off;
}

/* ---- discovery -------------------------------------------------------------------------- */

static uint64_t parse_number(const char **p, bool *ok)
{
    const char *s = *p;
    unsigned base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    uint64_t v = 0;
    bool any = false;
    for (;; s++) {
        unsigned d;
        char c = *s;
        if (c >= '0' && c <= '9')
            d = (unsigned)(c - '0');
        else if (base == 16 && (c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (unsigned)((c | 0x20) - 'a' + 10);
        else
            break;
        v = v * base + d;
        any = true;
    }
    *ok = any;
    *p = s;
    return v;
}

/* "SIZE[K|M]@BASE:IRQ[:ID]" */
static bool parse_device(const char *s, struct gvirtio_dev *d)
{
    bool ok;
    uint64_t size = parse_number(&s, &ok);
    if (!ok)
        return false;
    if (*s == 'K' || *s == 'k')
        size <<= 10, s++;
    else if (*s == 'M' || *s == 'm')
        size <<= 20, s++;
    if (*s++ != '@')
        return false;
    uint64_t base = parse_number(&s, &ok);
    if (!ok || *s++ != ':')
        return false;
    uint64_t irq = parse_number(&s, &ok);
    if (!ok)
        return false;
    *d = (struct gvirtio_dev){.base = base, .size = size, .irq = (unsigned)irq};
    d->device_id = gvirtio_read32(d, REG_DEVICE_ID);
    return true;
}

unsigned gvirtio_find_all(struct gvirtio_dev *out, unsigned max)
{
    static const char key[] = "virtio_mmio.device=";
    const char *p = guest_cmdline();
    unsigned n = 0;
    while (*p && n < max) {
        while (*p == ' ')
            p++;
        const char *word = p;
        while (*p && *p != ' ')
            p++;
        if ((size_t)(p - word) > sizeof(key) - 1 && !strncmp(word, key, sizeof(key) - 1) &&
            parse_device(word + sizeof(key) - 1, &out[n]) &&
            gvirtio_read32(&out[n], REG_MAGIC) == 0x74726976 && out[n].device_id != 0)
            n++;
    }
    return n;
}

bool gvirtio_find(uint32_t device_id, unsigned nth, struct gvirtio_dev *d)
{
    static struct gvirtio_dev all[GVIRTIO_MAX_DEVICES];
    unsigned n = gvirtio_find_all(all, GVIRTIO_MAX_DEVICES);
    for (unsigned i = 0; i < n; i++)
        if (all[i].device_id == device_id && nth-- == 0) {
            *d = all[i];
            return true;
        }
    return false;
}

/* ---- registers -------------------------------------------------------------------------- */

uint32_t gvirtio_read32(const struct gvirtio_dev *d, unsigned offset)
{
    return readl(d->base + offset);
}

void gvirtio_write32(const struct gvirtio_dev *d, unsigned offset, uint32_t v)
{
    writel(d->base + offset, v);
}

uint8_t gvirtio_config8(const struct gvirtio_dev *d, unsigned offset)
{
    return readb(d->base + REG_CONFIG + offset);
}

uint16_t gvirtio_config16(const struct gvirtio_dev *d, unsigned offset)
{
    return readw(d->base + REG_CONFIG + offset);
}

uint32_t gvirtio_config32(const struct gvirtio_dev *d, unsigned offset)
{
    return readl(d->base + REG_CONFIG + offset);
}

uint64_t gvirtio_config64(const struct gvirtio_dev *d, unsigned offset)
{
    /* §4.2.2.2: 64-bit fields are read as two 32-bit halves */
    return gvirtio_config32(d, offset) | (uint64_t)gvirtio_config32(d, offset + 4) << 32;
}

uint32_t gvirtio_status(const struct gvirtio_dev *d)
{
    return gvirtio_read32(d, REG_STATUS);
}

bool gvirtio_init(struct gvirtio_dev *d, uint64_t want)
{
    if (gvirtio_read32(d, REG_VERSION) != 2) {
        guest_printf("virtio at 0x%lx: version %u, not 2\n", (unsigned long)d->base,
                     gvirtio_read32(d, REG_VERSION));
        return false;
    }
    gvirtio_write32(d, REG_STATUS, 0);
    gvirtio_write32(d, REG_STATUS, STATUS_ACK);
    gvirtio_write32(d, REG_STATUS, STATUS_ACK | STATUS_DRIVER);
    uint64_t offered = 0;
    for (unsigned sel = 0; sel < 2; sel++) {
        gvirtio_write32(d, REG_DEVICE_FEAT_SEL, sel);
        offered |= (uint64_t)gvirtio_read32(d, REG_DEVICE_FEATURES) << (32 * sel);
    }
    want |= 1ull << F_VERSION_1;
    d->features = offered & want;
    for (unsigned sel = 0; sel < 2; sel++) {
        gvirtio_write32(d, REG_DRIVER_FEAT_SEL, sel);
        gvirtio_write32(d, REG_DRIVER_FEATURES, (uint32_t)(d->features >> (32 * sel)));
    }
    gvirtio_write32(d, REG_STATUS, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK);
    if (!(gvirtio_status(d) & STATUS_FEATURES_OK)) {
        guest_printf("virtio at 0x%lx: features 0x%lx refused\n", (unsigned long)d->base,
                     (unsigned long)d->features);
        return false;
    }
    return true;
}

void gvirtio_driver_ok(struct gvirtio_dev *d)
{
    gvirtio_write32(d, REG_STATUS,
                    STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
}

/* ---- queues ----------------------------------------------------------------------------- */

bool gvirtq_setup(struct gvirtio_dev *d, struct gvirtq *q, unsigned index, uint16_t size)
{
    gvirtio_write32(d, REG_QUEUE_SEL, index);
    uint32_t max = gvirtio_read32(d, REG_QUEUE_NUM_MAX);
    if (max == 0 || size > max) {
        guest_printf("virtio at 0x%lx: queue %u: size %u, the device allows %u\n",
                     (unsigned long)d->base, index, size, max);
        return false;
    }
    *q = (struct gvirtq){.dev = d, .index = index, .size = size, .num_free = size};
    q->event_idx = d->features & (1ull << GVIRTIO_F_EVENT_IDX);
    q->desc = gvirtio_alloc(16ull * size, 4096);
    q->avail = gvirtio_alloc(6 + 2ull * size, 4096);
    q->used = gvirtio_alloc(6 + 8ull * size, 4096);
    for (uint16_t i = 0; i < size; i++)
        q->desc[i].next = (uint16_t)(i + 1);
    uint64_t desc = (uintptr_t)q->desc, avail = (uintptr_t)q->avail, used = (uintptr_t)q->used;
    gvirtio_write32(d, REG_QUEUE_NUM, size);
    gvirtio_write32(d, REG_QUEUE_DESC_LOW, (uint32_t)desc);
    gvirtio_write32(d, REG_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
    gvirtio_write32(d, REG_QUEUE_AVAIL_LOW, (uint32_t)avail);
    gvirtio_write32(d, REG_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
    gvirtio_write32(d, REG_QUEUE_USED_LOW, (uint32_t)used);
    gvirtio_write32(d, REG_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
    gvirtio_write32(d, REG_QUEUE_READY, 1);
    return true;
}

void gvirtq_publish(struct gvirtq *q, uint16_t head)
{
    q->avail[2 + q->avail_idx % q->size] = head;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    q->avail_idx++;
    q->avail[1] = q->avail_idx;
}

int gvirtq_add(struct gvirtq *q, const struct gbuf *bufs, unsigned n_out, unsigned n_in)
{
    unsigned n = n_out + n_in;
    if (n == 0 || n > q->num_free)
        return -1;
    uint16_t head = q->free_head, i = head, last = head;
    for (unsigned k = 0; k < n; k++) {
        volatile struct gvirtq_desc *d = &q->desc[i];
        d->addr = (uintptr_t)bufs[k].addr;
        d->len = bufs[k].len;
        d->flags = (uint16_t)((k >= n_out ? GVIRTQ_DESC_F_WRITE : 0) |
                              (k + 1 < n ? GVIRTQ_DESC_F_NEXT : 0));
        last = i;
        i = d->next;
    }
    q->free_head = q->desc[last].next;
    q->num_free = (uint16_t)(q->num_free - n);
    gvirtq_publish(q, head);
    return head;
}

void gvirtq_kick(struct gvirtq *q)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint16_t old = q->kicked_idx, now = q->avail_idx;
    q->kicked_idx = now;
    if (q->event_idx) {
        /* vring_need_event (§2.7.10): the device's avail_event sits after the used ring */
        uint16_t event = *(volatile uint16_t *)(q->used + 4 + 8 * q->size);
        if ((uint16_t)(now - event - 1) >= (uint16_t)(now - old))
            return;
    }
    gvirtio_write32(q->dev, REG_QUEUE_NOTIFY, q->index);
}

bool gvirtq_get_used(struct gvirtq *q, uint16_t *head, uint32_t *len)
{
    uint16_t idx = *(volatile uint16_t *)(q->used + 2);
    if (idx == q->last_used)
        return false;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    volatile uint32_t *elem = (volatile uint32_t *)(q->used + 4 + 8 * (q->last_used % q->size));
    uint16_t id = (uint16_t)elem[0];
    *head = id;
    *len = elem[1];
    q->last_used++;
    /* give the chain's descriptors back (only chains made by gvirtq_add are in the free list) */
    if (id < q->size) {
        uint16_t i = id, count = 1;
        while ((q->desc[i].flags & GVIRTQ_DESC_F_NEXT) && count < q->size) {
            i = q->desc[i].next;
            count++;
        }
        q->desc[i].next = q->free_head;
        q->free_head = id;
        q->num_free = (uint16_t)(q->num_free + count);
    }
    return true;
}

bool gvirtq_wait_used(struct gvirtq *q, uint16_t *head, uint32_t *len, unsigned timeout_ms)
{
    for (unsigned waited = 0; waited <= timeout_ms * 10; waited++) {
        if (gvirtq_get_used(q, head, len))
            return true;
        guest_udelay(100);
    }
    return false;
}

bool gvirtq_send_wait(struct gvirtq *q, const void *addr, uint32_t len, unsigned timeout_ms)
{
    struct gbuf b = {addr, len};
    uint16_t head;
    uint32_t used;
    if (gvirtq_add(q, &b, 1, 0) < 0)
        return false;
    gvirtq_kick(q);
    return gvirtq_wait_used(q, &head, &used, timeout_ms);
}

/* ---- interrupts through the IOAPIC and LAPIC -------------------------------------------- */

static void ioapic_write(unsigned reg, uint32_t v)
{
    writel(IOAPIC_BASE + 0x00, reg);
    writel(IOAPIC_BASE + 0x10, v);
}

void gvirtio_irq_route(const struct gvirtio_dev *d, uint8_t vector)
{
    /* redirection entry: vector, fixed delivery, physical destination APIC 0, edge, high */
    ioapic_write(0x10 + 2 * d->irq + 1, 0);
    ioapic_write(0x10 + 2 * d->irq, vector);
    writel(LAPIC_BASE + 0xf0, readl(LAPIC_BASE + 0xf0) | 0x100); /* LAPIC software enable */
}

bool gvirtio_irq_pending(uint8_t vector)
{
    return readl(LAPIC_BASE + 0x200 + 0x10 * (vector / 32)) & (1u << (vector % 32));
}
