/* Internal interfaces between the kit's files (not for test guests). */
#ifndef GUEST_KIT_H
#define GUEST_KIT_H

#include <stdint.h>

/* Written by pvh_entry (start.S): the physical address of struct hvm_start_info. */
extern uint32_t guest_start_info_paddr;
/* Read by ap_entry32 (start.S): the CPU index the AP being started takes. */
extern volatile uint32_t guest_ap_boot_index;

void guest_cpu_entry(unsigned cpu);
void guest_exception(uint64_t vector, uint64_t error, uint64_t rip, uint64_t cs, uint64_t rsp);
void guest_bootinfo_init(void);
/* Maps the memory map's RAM above 4 GiB (after guest_bootinfo_init). */
void guest_paging_init(void);
/* Frees the print lock: an exception may have hit a CPU while it held it. */
void guest_print_lock_break(void);
void guest_smp_ap_main(unsigned cpu);
/* The local APIC ids of enabled processors per the MADT; returns the count (0 if no MADT). */
unsigned guest_madt_apic_ids(uint32_t *ids, unsigned max, uint64_t *lapic_paddr);

#endif
