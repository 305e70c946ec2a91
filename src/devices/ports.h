/* The x86 I/O ports wisp's machine decodes (documented in docs/machine.md). */
#ifndef WISP_DEVICES_PORTS_H
#define WISP_DEVICES_PORTS_H

#define PORT_COM1        0x3f8 /* 8250 UART, 8 ports, IRQ 4 */
#define COM1_IRQ         4
#define PORT_I8042_DATA  0x60
#define PORT_I8042_CMD   0x64  /* write 0xfe: pulse reset line -> VM ends, exit 0 */
#define PORT_TEST_EXIT   0xf4  /* 4 ports; a write of V ends the VMM with exit status V & 0xff */
#define PORT_BOOT_MARKER 0x440 /* 4 ports; each write prints the time since process start */
#define PORT_ACPI_RESET  0x600 /* FADT RESET_REG (HW-reduced): write ACPI_RESET_VALUE */
#define ACPI_RESET_VALUE 0x0f
#define PORT_ACPI_SLEEP_CTL                                                                        \
    0x604 /* FADT SLEEP_CONTROL_REG: SLP_EN (bit 5) with any type ends the VM */
#define PORT_ACPI_SLEEP_STS 0x605 /* FADT SLEEP_STATUS_REG */
#define PORT_PCI_RESET      0xcf9 /* writes of 0x06/0x0e (hard/soft reset) also end the VM */

#endif
