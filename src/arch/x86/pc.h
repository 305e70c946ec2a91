/* The PC platform wisp's machine is: its I/O ports, legacy interrupt lines, the MMIO window for
 * devices and the interrupt lines devices get (docs/machine.md has the tables). The machine
 * (src/vmm) places devices with these; the firmware tables describe them. */
#ifndef WISP_ARCH_X86_PC_H
#define WISP_ARCH_X86_PC_H

#define PORT_COM1        0x3f8 /* 8250 UART, 8 ports */
#define COM1_IRQ         4
#define PORT_I8042_DATA  0x60
#define PORT_I8042_CMD   0x64  /* write 0xfe: pulse reset line -> VM ends, exit 0 */
#define I8042_IRQ        1     /* the keyboard's ISA interrupt line */
#define PORT_TEST_EXIT   0xf4  /* 4 ports; a write of V ends the VMM with exit status V & 0xff */
#define PORT_BOOT_MARKER 0x440 /* 4 ports; each write prints the time since process start */
#define PORT_ACPI_RESET  0x600 /* FADT RESET_REG (HW-reduced): write ACPI_RESET_VALUE */
#define ACPI_RESET_VALUE 0x0f
#define PORT_ACPI_SLEEP_CTL                                                                        \
    0x604 /* FADT SLEEP_CONTROL_REG: SLP_EN (bit 5) with any type ends the VM */
#define PORT_ACPI_SLEEP_STS 0x605 /* FADT SLEEP_STATUS_REG */
#define PORT_PCI_RESET      0xcf9 /* writes with bit 2 (RST_CPU) end the VM */
#define PORT_IO_DELAY       0x80
#define PORT_IO_DELAY_ALT   0xed

/* Device MMIO windows (virtio-mmio: 4 KiB each) are handed out upward from here, inside the
 * 32-bit MMIO hole and below the IOAPIC. */
#define PC_DEVICE_MMIO_BASE 0xd0000000ULL
#define PC_DEVICE_MMIO_END  0xfe000000ULL
/* Memory-like devices (virtio-pmem regions) go above RAM and the hole, each starting on a
 * 128 MiB boundary (a Linux memory section: no region shares one with RAM or another). */
#define PC_HIGH_DEVICE_ALIGN (128ULL << 20)

/* KVM's in-kernel IOAPIC has 24 pins; GSI n is pin n (GSI 0, the PIT, is routed to pin 2).
 * Devices get the ISA lines no legacy device of this machine uses first (so that a guest that
 * maps only ISA IRQs identity, like Linux with ACPI before a driver asks, finds them), then
 * the pins above 15. 0 (PIT), 1, 2 (cascade), 4 (COM1), 8 (RTC) and 9 (ACPI SCI) are never
 * handed out. */
#define PC_IOAPIC_PINS 24
#define PC_DEVICE_GSIS                                                                             \
    {                                                                                              \
        5, 6, 7, 10, 11, 12, 13, 14, 15, 3, 16, 17, 18, 19, 20, 21, 22, 23                         \
    }

#endif
