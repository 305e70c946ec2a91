/* x86_boot_set_vcpu_regs() against real KVM: a tiny ELF64 (long mode through wisp's page tables and
 * GDT) and a tiny PVH ELF (32-bit protected mode) each report their boot register to port 0xf4.
 * Skipped when /dev/kvm cannot be opened. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "arch/x86/boot_int.h"
#include "common/cleanup.h"
#include "test_x86_util.h"

#define CODE_ADDR 0x200000ULL

/* Writes an ELF64 (or ELF32 with a PVH note) holding `code` at CODE_ADDR. */
static char *write_tiny_elf(bool pvh, const uint8_t *code, size_t len)
{
    uint8_t img[0x1100] = {0};
    uint32_t entry = (uint32_t)CODE_ADDR;
    if (!pvh) {
        Elf64_Ehdr eh = {
            .e_ident = {ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS64, ELFDATA2LSB, EV_CURRENT},
            .e_type = ET_EXEC,
            .e_machine = EM_X86_64,
            .e_version = EV_CURRENT,
            .e_entry = CODE_ADDR,
            .e_phoff = sizeof(eh),
            .e_ehsize = sizeof(eh),
            .e_phentsize = sizeof(Elf64_Phdr),
            .e_phnum = 1};
        Elf64_Phdr ph = {.p_type = PT_LOAD,
                         .p_offset = 0x1000,
                         .p_paddr = CODE_ADDR,
                         .p_filesz = len,
                         .p_memsz = len};
        memcpy(img, &eh, sizeof(eh));
        memcpy(img + sizeof(eh), &ph, sizeof(ph));
    } else {
        Elf32_Ehdr eh = {
            .e_ident = {ELFMAG0, ELFMAG1, ELFMAG2, ELFMAG3, ELFCLASS32, ELFDATA2LSB, EV_CURRENT},
            .e_type = ET_EXEC,
            .e_machine = EM_386,
            .e_version = EV_CURRENT,
            .e_entry = entry,
            .e_phoff = sizeof(eh),
            .e_ehsize = sizeof(eh),
            .e_phentsize = sizeof(Elf32_Phdr),
            .e_phnum = 2};
        Elf32_Phdr ph[2] = {
            {.p_type = PT_LOAD,
             .p_offset = 0x1000,
             .p_paddr = entry,
             .p_filesz = (uint32_t)len,
             .p_memsz = (uint32_t)len},
            {.p_type = PT_NOTE, .p_offset = 0x200, .p_filesz = 20, .p_align = 4},
        };
        const uint32_t note[3] = {4, 4, XEN_ELFNOTE_PHYS32_ENTRY};
        memcpy(img, &eh, sizeof(eh));
        memcpy(img + sizeof(eh), ph, sizeof(ph));
        memcpy(img + 0x200, note, sizeof(note));
        memcpy(img + 0x20c, "Xen", 4);
        memcpy(img + 0x210, &entry, 4);
    }
    memcpy(img + 0x1000, code, len);
    return x86_test_tmpfile(img, sizeof(img));
}

struct kvm_box {
    int kvm, vm, vcpu;
    struct kvm_run *run;
    size_t run_size;
    struct guest_mem mem;
};

static void box_close(struct kvm_box *b)
{
    if (b->run)
        munmap(b->run, b->run_size);
    cleanup_close_fn(&b->vcpu);
    cleanup_close_fn(&b->vm);
    cleanup_close_fn(&b->kvm);
    guest_mem_destroy(&b->mem);
}

/* A VM with 64 MiB of RAM and one vCPU whose CPUID is KVM's supported set (long mode needs LM). */
static int box_open(struct kvm_box *b)
{
    memset(b, 0, sizeof(*b));
    b->kvm = b->vm = b->vcpu = -1;
    b->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (b->kvm < 0)
        return -1;
    b->vm = ioctl(b->kvm, KVM_CREATE_VM, 0);
    assert_true(b->vm >= 0);
    ioctl(b->vm, KVM_SET_TSS_ADDR, 0xfffbd000UL); /* Intel without unrestricted guest needs it */
    assert_int_equal(guest_mem_create(&b->mem, 64ULL << 20, NULL), 0);
    struct kvm_userspace_memory_region r = {.slot = 0,
                                            .guest_phys_addr = 0,
                                            .memory_size = b->mem.regions[0].size,
                                            .userspace_addr = (uintptr_t)b->mem.regions[0].hva};
    assert_int_equal(ioctl(b->vm, KVM_SET_USER_MEMORY_REGION, &r), 0);
    b->vcpu = ioctl(b->vm, KVM_CREATE_VCPU, 0);
    assert_true(b->vcpu >= 0);
    const int max = 256;
    cleanup_free struct kvm_cpuid2 *cpuid =
        calloc(1, sizeof(*cpuid) + max * sizeof(struct kvm_cpuid_entry2));
    cpuid->nent = max;
    assert_int_equal(ioctl(b->kvm, KVM_GET_SUPPORTED_CPUID, cpuid), 0);
    assert_int_equal(ioctl(b->vcpu, KVM_SET_CPUID2, cpuid), 0);
    b->run_size = (size_t)ioctl(b->kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    b->run = mmap(NULL, b->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, b->vcpu, 0);
    assert_true(b->run != MAP_FAILED);
    return 0;
}

/* Boots `code` and returns the 32-bit value it writes to port 0xf4. */
static uint32_t boot_and_read_port(bool pvh, const uint8_t *code, size_t len,
                                   enum x86_boot_kind want)
{
    struct kvm_box b;
    if (box_open(&b) < 0) {
        print_message("skipping: cannot open /dev/kvm: %s\n", strerror(errno));
        skip();
    }
    char *path = write_tiny_elf(pvh, code, len);
    struct x86_boot_params p = {.kernel_path = path, .nr_cpus = 1};
    struct x86_boot_entry e;
    struct wisp_err err = {0};
    if (x86_boot_load(&b.mem, &p, &e, &err) < 0)
        fail_msg("%s", err.msg);
    x86_test_rmfile(path);
    assert_int_equal(e.kind, want);
    if (x86_boot_set_vcpu_regs(b.vcpu, &e, &err) < 0)
        fail_msg("%s", err.msg);
    struct kvm_sregs s;
    assert_int_equal(ioctl(b.vcpu, KVM_GET_SREGS, &s), 0);
    assert_true(s.efer == e.efer || (s.efer & ~0x1ULL) == e.efer); /* SCE may be kept */
    assert_int_equal(s.cs.l, e.cs.l);
    assert_int_equal(ioctl(b.vcpu, KVM_RUN, 0), 0);
    if (b.run->exit_reason != KVM_EXIT_IO)
        fail_msg("exit reason %u, expected KVM_EXIT_IO", b.run->exit_reason);
    assert_int_equal(b.run->io.port, 0xf4);
    assert_int_equal(b.run->io.size, 4);
    uint32_t v;
    memcpy(&v, (uint8_t *)b.run + b.run->io.data_offset, 4);
    box_close(&b);
    return v;
}

static void test_elf64_entry_runs_in_long_mode(void **state)
{
    /* movabs $0x1234567800000000, %rax; shr $32, %rax; add %esi, %eax; out %eax, $0xf4; hlt.
     * Only 64-bit mode yields 0x12345678 + rsi (in 32-bit mode 0x48 is `dec %eax`). */
    const uint8_t code[] = {0x48, 0xb8, 0,    0,    0,    0,    0x78, 0x56, 0x34, 0x12,
                            0x48, 0xc1, 0xe8, 0x20, 0x01, 0xf0, 0xe7, 0xf4, 0xf4};
    assert_int_equal(boot_and_read_port(false, code, sizeof(code), X86_BOOT_ELF64),
                     0x12345678 + X86_ZERO_PAGE_ADDR);
}

static void test_pvh_entry_gets_start_info_in_ebx(void **state)
{
    /* mov (%ebx), %eax (the start_info magic, read with paging off); out %eax, $0xf4; hlt */
    const uint8_t code[] = {0x8b, 0x03, 0xe7, 0xf4, 0xf4};
    assert_int_equal(boot_and_read_port(true, code, sizeof(code), X86_BOOT_PVH),
                     XEN_HVM_START_MAGIC_VALUE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elf64_entry_runs_in_long_mode),
        cmocka_unit_test(test_pvh_entry_gets_start_info_in_ebx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
