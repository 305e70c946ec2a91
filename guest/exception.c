/*
 * Takes an exception in ring 3 on purpose ("fault=ud", "gp" or "pf" on the command line; with
 * "cpu=N" on that AP instead of the BSP); the kit must report the vector and RIP and exit with
 * GUEST_EXIT_EXCEPTION.
 */
#include "guest.h"

/* One faulting instruction each, at a known address. */
__asm__(".text\n"
        "fault_ud: ud2\n"
        "fault_gp: hlt\n"                        /* privileged: #GP(0) in ring 3 */
        "pf_entry: movabs $0x8000000000, %rax\n" /* beyond the 512 GiB mapped */
        "fault_pf: movq $0, (%rax)\n"            /* #PF */
        "ret\n");
extern const char fault_ud[], fault_gp[], fault_pf[], pf_entry[];

static const char *fault_at;

static void take_fault(unsigned cpu, void *target)
{
    if (cpu != *(unsigned *)target)
        return;
    ((void (*)(void))(uintptr_t)(fault_at == fault_pf ? pf_entry : fault_at))();
}

void guest_main(void)
{
    char kind[8] = "ud";
    guest_cmdline_get("fault", kind, sizeof(kind));
    const char *at = !strcmp(kind, "gp") ? fault_gp : !strcmp(kind, "pf") ? fault_pf : fault_ud;
    unsigned cpu = (unsigned)guest_cmdline_u64("cpu", 0);
    if (cpu != 0) { /* "cpu=N": fault on an AP instead */
        GUEST_ASSERT(guest_smp_boot(5000) > cpu);
        fault_at = at;
        guest_printf("exception: expect fault '%s' at rip 0x%lx on cpu %u\n", kind,
                     (unsigned long)(uintptr_t)at, cpu);
        guest_smp_run(take_fault, &cpu);
        guest_printf("exception: no fault taken\n");
        guest_exit(GUEST_EXIT_FAIL);
    }
    guest_printf("exception: expect fault '%s' at rip 0x%lx\n", kind, (unsigned long)(uintptr_t)at);
    ((void (*)(void))(uintptr_t)(at == fault_pf ? pf_entry : at))();
    guest_printf("exception: no fault taken\n");
    guest_exit(GUEST_EXIT_FAIL);
}
