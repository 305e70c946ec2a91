/* A small AML (ACPI Machine Language) encoder for building the DSDT: a growable byte buffer and
 * one function per construct wisp needs (ACPI 6.5 §20 "ACPI Machine Language Specification").
 *
 * Usage: struct aml_buf b = AML_BUF_INIT; aml_name_integer(&b, "_UID", 0); ...; if (b.failed)
 * -> -ENOMEM; aml_buf_free(&b). A failed allocation latches `failed` and later calls do nothing,
 * so a builder checks once at the end. Nested constructs (Device, Scope) take a finished body. */
#ifndef WISP_ARCH_X86_AML_H
#define WISP_ARCH_X86_AML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aml_buf {
    uint8_t *data;
    size_t len, cap;
    bool failed;
};
#define AML_BUF_INIT                                                                               \
    {                                                                                              \
        0                                                                                          \
    }

void aml_buf_free(struct aml_buf *b);
void aml_bytes(struct aml_buf *b, const void *p, size_t n);
void aml_byte(struct aml_buf *b, uint8_t v);
/* PkgLength (§20.2.4): encodes `len` bytes of content plus the encoding's own size. */
void aml_pkg_length(struct aml_buf *b, size_t len);
/* NameSeg or a path such as "_SB_" / "\\_SB_": 4-character segments, '\\' allowed first. */
void aml_name_string(struct aml_buf *b, const char *name);
/* Integer constant, shortest encoding: ZeroOp, OneOp, Byte/Word/DWord/QWordPrefix. */
void aml_integer(struct aml_buf *b, uint64_t v);
/* String constant: StringPrefix ASCII NUL. */
void aml_string(struct aml_buf *b, const char *s);

/* Name(name, integer) / Name(name, "string"). */
void aml_name_integer(struct aml_buf *b, const char *name, uint64_t v);
void aml_name_str(struct aml_buf *b, const char *name, const char *s);
/* Name(name, Package() {v[0], ... v[n-1]}) of integers. */
void aml_name_package(struct aml_buf *b, const char *name, const uint64_t *v, unsigned n);
/* Device(name) { body } and Scope(name) { body }. */
void aml_device(struct aml_buf *b, const char *name, const struct aml_buf *body);
void aml_scope(struct aml_buf *b, const char *name, const struct aml_buf *body);
/* Name(_CRS, ResourceTemplate() { Memory32Fixed(ReadWrite, base, size)
 *   Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi } }) (§6.4.3.4, §6.4.3.6). */
/* Name (_CRS, ResourceTemplate () { IO (Decode16, port, port, 0, len) IRQNoFlags () {isa_irq} }) */
void aml_crs_io_irq(struct aml_buf *b, uint16_t port, uint8_t len, uint8_t isa_irq);
/* The same with two I/O ranges of `len` ports (an i8042's data and command ports). */
void aml_crs_io2_irq(struct aml_buf *b, uint16_t port0, uint16_t port1, uint8_t len,
                     uint8_t isa_irq);
void aml_crs_mmio_irq(struct aml_buf *b, uint32_t base, uint32_t size, uint32_t gsi);

#endif
