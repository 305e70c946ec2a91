/* AML encoder (ACPI 6.5 §20.2: AML grammar). */
#include "arch/x86/aml.h"

#include <stdlib.h>
#include <string.h>

#define AML_ZERO_OP       0x00
#define AML_ONE_OP        0x01
#define AML_NAME_OP       0x08
#define AML_BYTE_PREFIX   0x0a
#define AML_WORD_PREFIX   0x0b
#define AML_DWORD_PREFIX  0x0c
#define AML_STRING_PREFIX 0x0d
#define AML_QWORD_PREFIX  0x0e
#define AML_SCOPE_OP      0x10
#define AML_BUFFER_OP     0x11
#define AML_PACKAGE_OP    0x12
#define AML_EXT_OP        0x5b
#define AML_DEVICE_OP     0x82 /* after AML_EXT_OP */
#define AML_ROOT_CHAR     '\\'

void aml_buf_free(struct aml_buf *b)
{
    free(b->data);
    *b = (struct aml_buf)AML_BUF_INIT;
}

void aml_bytes(struct aml_buf *b, const void *p, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (!d) {
            b->failed = true;
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
}

void aml_byte(struct aml_buf *b, uint8_t v)
{
    aml_bytes(b, &v, 1);
}

void aml_pkg_length(struct aml_buf *b, size_t len)
{
    /* One byte holds up to 63; otherwise bits 7:6 of the lead byte count the following bytes
     * and its low nibble holds the low 4 bits of the length. The length includes itself. */
    if (len + 1 < 0x40) {
        aml_byte(b, (uint8_t)(len + 1));
        return;
    }
    unsigned extra = len + 2 < (1U << 12) ? 1 : len + 3 < (1U << 20) ? 2 : 3;
    size_t total = len + 1 + extra;
    if (total >= (1U << 28)) {
        b->failed = true;
        return;
    }
    aml_byte(b, (uint8_t)((extra << 6) | (total & 0xf)));
    for (unsigned i = 0; i < extra; i++)
        aml_byte(b, (uint8_t)(total >> (4 + 8 * i)));
}

void aml_name_string(struct aml_buf *b, const char *name)
{
    if (*name == AML_ROOT_CHAR)
        aml_byte(b, (uint8_t)*name++);
    size_t n = strlen(name);
    if (n != 4) { /* wisp only emits single NameSegs; a multi-segment path is a caller bug */
        b->failed = true;
        return;
    }
    aml_bytes(b, name, 4);
}

void aml_integer(struct aml_buf *b, uint64_t v)
{
    uint8_t le[8];
    for (unsigned i = 0; i < 8; i++)
        le[i] = (uint8_t)(v >> (8 * i));
    if (v == 0)
        aml_byte(b, AML_ZERO_OP);
    else if (v == 1)
        aml_byte(b, AML_ONE_OP);
    else if (v <= 0xff)
        aml_byte(b, AML_BYTE_PREFIX), aml_bytes(b, le, 1);
    else if (v <= 0xffff)
        aml_byte(b, AML_WORD_PREFIX), aml_bytes(b, le, 2);
    else if (v <= 0xffffffff)
        aml_byte(b, AML_DWORD_PREFIX), aml_bytes(b, le, 4);
    else
        aml_byte(b, AML_QWORD_PREFIX), aml_bytes(b, le, 8);
}

void aml_string(struct aml_buf *b, const char *s)
{
    aml_byte(b, AML_STRING_PREFIX);
    aml_bytes(b, s, strlen(s) + 1);
}

void aml_name_integer(struct aml_buf *b, const char *name, uint64_t v)
{
    aml_byte(b, AML_NAME_OP);
    aml_name_string(b, name);
    aml_integer(b, v);
}

void aml_name_str(struct aml_buf *b, const char *name, const char *s)
{
    aml_byte(b, AML_NAME_OP);
    aml_name_string(b, name);
    aml_string(b, s);
}

void aml_name_package(struct aml_buf *b, const char *name, const uint64_t *v, unsigned n)
{
    struct aml_buf body = AML_BUF_INIT;
    aml_byte(&body, (uint8_t)n); /* NumElements */
    for (unsigned i = 0; i < n; i++)
        aml_integer(&body, v[i]);
    aml_byte(b, AML_NAME_OP);
    aml_name_string(b, name);
    aml_byte(b, AML_PACKAGE_OP);
    aml_pkg_length(b, body.len);
    aml_bytes(b, body.data, body.len);
    b->failed |= body.failed || n > 0xff;
    aml_buf_free(&body);
}

static void aml_named_block(struct aml_buf *b, const char *name, const struct aml_buf *body)
{
    struct aml_buf nm = AML_BUF_INIT;
    aml_name_string(&nm, name);
    aml_pkg_length(b, nm.len + body->len);
    aml_bytes(b, nm.data, nm.len);
    aml_bytes(b, body->data, body->len);
    b->failed |= nm.failed || body->failed;
    aml_buf_free(&nm);
}

void aml_device(struct aml_buf *b, const char *name, const struct aml_buf *body)
{
    aml_byte(b, AML_EXT_OP);
    aml_byte(b, AML_DEVICE_OP);
    aml_named_block(b, name, body);
}

void aml_scope(struct aml_buf *b, const char *name, const struct aml_buf *body)
{
    aml_byte(b, AML_SCOPE_OP);
    aml_named_block(b, name, body);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Name (_CRS, Buffer) around a resource template body (descriptors + End Tag). */
static void aml_crs(struct aml_buf *b, const uint8_t *res, size_t len)
{
    const uint8_t end_tag[2] = {0x79, 0x00}; /* §6.4.2.9 End Tag, checksum 0 */
    struct aml_buf body = AML_BUF_INIT;
    aml_integer(&body, len + sizeof(end_tag)); /* BufferSize */
    aml_bytes(&body, res, len);
    aml_bytes(&body, end_tag, sizeof(end_tag));
    aml_byte(b, AML_NAME_OP);
    aml_name_string(b, "_CRS");
    aml_byte(b, AML_BUFFER_OP);
    aml_pkg_length(b, body.len);
    aml_bytes(b, body.data, body.len);
    b->failed |= body.failed;
    aml_buf_free(&body);
}

void aml_crs_io_irq(struct aml_buf *b, uint16_t port, uint8_t len, uint8_t isa_irq)
{
    /* §6.4.2.5 I/O Port descriptor: 0x47, decode16, min, max, alignment, length.
     * §6.4.2.1 IRQ descriptor without flags: 0x22, 16-bit mask (edge, active high). */
    uint8_t res[8 + 3] = {
        0x47, 0x01, (uint8_t)port, (uint8_t)(port >> 8), (uint8_t)port, (uint8_t)(port >> 8),
        0x00, len,  0x22};
    uint16_t mask = (uint16_t)(1u << (isa_irq & 15));
    res[9] = (uint8_t)mask;
    res[10] = (uint8_t)(mask >> 8);
    aml_crs(b, res, sizeof(res));
}

void aml_crs_io2_irq(struct aml_buf *b, uint16_t port0, uint16_t port1, uint8_t len,
                     uint8_t isa_irq)
{
    /* two §6.4.2.5 I/O Port descriptors, then the §6.4.2.1 IRQ descriptor as above */
    const uint16_t ports[2] = {port0, port1};
    uint8_t res[8 + 8 + 3];
    for (unsigned i = 0; i < 2; i++) {
        uint8_t *io = res + 8 * i;
        io[0] = 0x47, io[1] = 0x01, io[6] = 0x00, io[7] = len;
        io[2] = io[4] = (uint8_t)ports[i];
        io[3] = io[5] = (uint8_t)(ports[i] >> 8);
    }
    uint16_t mask = (uint16_t)(1u << (isa_irq & 15));
    res[16] = 0x22, res[17] = (uint8_t)mask, res[18] = (uint8_t)(mask >> 8);
    aml_crs(b, res, sizeof(res));
}

void aml_crs_mmio_irq(struct aml_buf *b, uint32_t base, uint32_t size, uint32_t gsi)
{
    /* §6.4.3.4 Memory32Fixed: 0x86, length 9, info bit 0 = read/write, base, length.
     * §6.4.3.6 Extended Interrupt: 0x89, length 6, flags (bit 0 consumer, bit 1 edge; active
     * high and exclusive are 0), count 1, interrupt number. §6.4.2.9 End Tag: 0x79, checksum 0. */
    uint8_t res[12 + 9] = {0x86, 0x09, 0x00, 0x01}; /* 3 + 9 and 3 + 6 bytes */
    put_le32(res + 4, base);
    put_le32(res + 8, size);
    uint8_t *irq = res + 12;
    irq[0] = 0x89, irq[1] = 0x06, irq[2] = 0x00, irq[3] = 0x03, irq[4] = 0x01;
    put_le32(irq + 5, gsi);
    aml_crs(b, res, sizeof(res));
}
