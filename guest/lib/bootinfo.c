/* What the VMM hands the guest: PVH start info (command line, memory map, RSDP) and ACPI tables. */
#include "guest.h"
#include "kit.h"

/* xen/include/public/arch-x86/hvm/start_info.h */
#define HVM_START_MAGIC 0x336ec578
struct hvm_start_info {
    uint32_t magic;
    uint32_t version;
    uint32_t flags;
    uint32_t nr_modules;
    uint64_t modlist_paddr;
    uint64_t cmdline_paddr;
    uint64_t rsdp_paddr;
    uint64_t memmap_paddr; /* version >= 1 */
    uint32_t memmap_entries;
    uint32_t reserved;
};

uint32_t guest_start_info_paddr;
static const struct hvm_start_info *start_info;

void guest_bootinfo_init(void)
{
    const struct hvm_start_info *si = (const void *)(uintptr_t)guest_start_info_paddr;
    if (!si)
        guest_fail(__FILE__, __LINE__, "no PVH start info (EBX was 0 at entry)");
    if (si->magic != HVM_START_MAGIC)
        guest_fail(__FILE__, __LINE__, "PVH start info at 0x%x has magic 0x%x, not 0x%x",
                   guest_start_info_paddr, si->magic, HVM_START_MAGIC);
    start_info = si;
}

const char *guest_cmdline(void)
{
    if (!start_info || !start_info->cmdline_paddr)
        return "";
    return (const char *)(uintptr_t)start_info->cmdline_paddr;
}

bool guest_cmdline_get(const char *key, char *buf, size_t size)
{
    const char *p = guest_cmdline();
    size_t klen = strlen(key);
    while (*p) {
        while (*p == ' ')
            p++;
        const char *word = p;
        while (*p && *p != ' ')
            p++;
        if ((size_t)(p - word) > klen && !strncmp(word, key, klen) && word[klen] == '=') {
            size_t n = (size_t)(p - word) - klen - 1;
            if (size == 0)
                return true;
            if (n >= size)
                n = size - 1;
            memcpy(buf, word + klen + 1, n);
            buf[n] = '\0';
            return true;
        }
    }
    return false;
}

uint64_t guest_cmdline_u64(const char *key, uint64_t fallback)
{
    char buf[32];
    if (!guest_cmdline_get(key, buf, sizeof(buf)) || !buf[0])
        return fallback;
    const char *p = buf;
    unsigned base = 10;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    uint64_t v = 0;
    for (; *p; p++) {
        unsigned d;
        if (*p >= '0' && *p <= '9')
            d = (unsigned)(*p - '0');
        else if (base == 16 && (*p | 0x20) >= 'a' && (*p | 0x20) <= 'f')
            d = (unsigned)((*p | 0x20) - 'a' + 10);
        else
            return fallback;
        v = v * base + d;
    }
    return v;
}

unsigned guest_memmap_count(void)
{
    if (!start_info || start_info->version < 1 || !start_info->memmap_paddr)
        return 0;
    return start_info->memmap_entries;
}

const struct guest_memmap_entry *guest_memmap(unsigned i)
{
    if (i >= guest_memmap_count())
        return NULL;
    const struct guest_memmap_entry *table = (const void *)(uintptr_t)start_info->memmap_paddr;
    return &table[i];
}

uint64_t guest_rsdp_paddr(void)
{
    return start_info ? start_info->rsdp_paddr : 0;
}

/* ACPI 6.4 5.2.5.3 (RSDP), 5.2.6 (table header). */
struct acpi_rsdp {
    char signature[8];
    uint8_t checksum;
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt_address;
    uint32_t length;
    uint64_t xsdt_address;
    uint8_t extended_checksum;
    uint8_t reserved[3];
} __attribute__((packed));

struct acpi_header {
    char signature[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    uint32_t creator_id;
    uint32_t creator_revision;
} __attribute__((packed));

uint64_t guest_acpi_find(const char signature[4])
{
    uint64_t rsdp_paddr = guest_rsdp_paddr();
    if (!rsdp_paddr)
        return 0;
    const struct acpi_rsdp *rsdp = (const void *)(uintptr_t)rsdp_paddr;
    if (memcmp(rsdp->signature, "RSD PTR ", 8))
        return 0;
    bool xsdt = rsdp->revision >= 2 && rsdp->xsdt_address;
    uint64_t root = xsdt ? rsdp->xsdt_address : rsdp->rsdt_address;
    const struct acpi_header *h = (const void *)(uintptr_t)root;
    unsigned entry_size = xsdt ? 8 : 4;
    if (h->length < sizeof(*h))
        return 0;
    unsigned n = (h->length - sizeof(*h)) / entry_size;
    const uint8_t *entries = (const uint8_t *)h + sizeof(*h);
    for (unsigned i = 0; i < n; i++) {
        uint64_t p = 0;
        memcpy(&p, entries + i * entry_size, entry_size);
        if (p && !memcmp(((const struct acpi_header *)(uintptr_t)p)->signature, signature, 4))
            return p;
    }
    return 0;
}

/* MADT (ACPI 6.4 5.2.12): header, LAPIC address, flags, then type/length records. */
unsigned guest_madt_apic_ids(uint32_t *ids, unsigned max, uint64_t *lapic_paddr)
{
    uint64_t madt = guest_acpi_find("APIC");
    if (!madt)
        return 0;
    const struct acpi_header *h = (const void *)(uintptr_t)madt;
    const uint8_t *p = (const uint8_t *)h + sizeof(*h);
    const uint8_t *end = (const uint8_t *)h + h->length;
    uint32_t lapic32;
    memcpy(&lapic32, p, 4);
    *lapic_paddr = lapic32;
    unsigned n = 0;
    for (p += 8; p + 2 <= end && p[1] >= 2 && p + p[1] <= end; p += p[1]) {
        uint32_t flags;
        if (p[0] == 0 && p[1] >= 8) { /* processor local APIC */
            memcpy(&flags, p + 4, 4);
            if ((flags & 1) && n < max)
                ids[n++] = p[3];
        } else if (p[0] == 9 && p[1] >= 16) { /* processor local x2APIC */
            memcpy(&flags, p + 8, 4);
            if ((flags & 1) && n < max)
                memcpy(&ids[n++], p + 4, 4);
        } else if (p[0] == 5 && p[1] >= 12) { /* local APIC address override */
            memcpy(lapic_paddr, p + 4, 8);
        }
    }
    return n;
}
