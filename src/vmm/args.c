/* wisp-vmm's command line: flags, their checks, and the usage text. */
#include "vmm/args.h"

#include <errno.h>
#include <string.h>

#include "common/parse.h"
#include "kvm/guest_mem.h"

const char vmm_usage_text[] =
    "NAME\n"
    "    wisp-vmm - run one KVM virtual machine from a Linux kernel\n"
    "\n"
    "SYNOPSIS\n"
    "    wisp-vmm --kernel PATH [--initrd PATH] [--cmdline STR] [--mem SIZE] [--cpus N]\n"
    "             [--serial stdio|file:PATH|none] [--boot-marker] [--debug] [--async-teardown]\n"
    "    wisp-vmm --help | --version\n"
    "\n"
    "DESCRIPTION\n"
    "    wisp-vmm creates a KVM virtual machine with an in-kernel PIC, IOAPIC, LAPIC and PIT, a\n"
    "    16550A UART on COM1, and the legacy ports below, loads a kernel into it and runs it "
    "until\n"
    "    the guest powers off, resets, writes the test-exit port, or wisp-vmm gets "
    "SIGTERM/SIGINT.\n"
    "    The kernel may be a bzImage (64-bit boot protocol), an ELF with a PVH note (vmlinux), or "
    "a\n"
    "    plain ELF64 entered in long mode. Guest RAM is mapped on demand: pages the guest never\n"
    "    touches cost nothing.\n"
    "\n"
    "OPTIONS\n"
    "    --kernel PATH       kernel image to boot (required)\n"
    "    --initrd PATH       initial ramdisk, loaded high in RAM\n"
    "    --cmdline STR       kernel command line, e.g. \"console=ttyS0\"\n"
    "    --mem SIZE          guest RAM; MiB unless a suffix is given (512, 512M, 2G; 2 MiB to\n"
    "                        1 TiB, a multiple of 4 KiB); default 128\n"
    "    --cpus N            vCPUs, 1 to KVM's maximum (KVM_CAP_MAX_VCPUS, at most 1024);\n"
    "                        default 1. vCPU 0 boots; the others wait for INIT/SIPI\n"
    "    --serial MODE       COM1 backend: \"stdio\" (default; output to stdout, input from "
    "stdin,\n"
    "                        a terminal is put in raw mode and restored on exit), \"file:PATH\"\n"
    "                        (output appended to PATH, no input) or \"none\" (discarded)\n"
    "    --boot-marker       print \"wisp-vmm: boot-marker V at T ms\" on stderr for each guest\n"
    "                        write of V to port 0x440, T being the time since wisp-vmm's main()\n"
    "                        began (CLOCK_MONOTONIC); if WISP_LAUNCH_NS is set, also\n"
    "                        \"(T2 ms since launch)\"\n"
    "    --debug             log each unclaimed I/O port once, and why the VM ended, on stderr\n"
    "    --async-teardown    exit as soon as the VM has ended and leave the slow part of its\n"
    "                        teardown (KVM destroying the VM: ~15-25 ms with the irqchip) to a\n"
    "                        helper process that shares wisp-vmm's memory and exits right\n"
    "                        after it; the helper is re-parented to init or to the nearest\n"
    "                        child subreaper, which must reap it (QEMU's async-teardown)\n"
    "    -h, --help          print this text and exit\n"
    "    -V, --version       print the version and exit\n"
    "\n"
    "I/O PORTS\n"
    "    0x3f8-0x3ff  COM1, 16550A UART, IRQ 4 (line gated by MCR OUT2, as on a PC)\n"
    "    0x60, 0x64   i8042: status reads 0x04; writing 0xfe to 0x64 resets: the VM ends, status "
    "0\n"
    "    0x80, 0xed   I/O delay, ignored\n"
    "    0xf4-0xf7    test exit: a write of V ends wisp-vmm with exit status V & 0xff\n"
    "    0x440-0x443  boot-time marker (see --boot-marker)\n"
    "    0x600        ACPI RESET_REG: writing 0x0f resets: the VM ends, status 0\n"
    "    0x604        ACPI SLEEP_CONTROL_REG: a write with SLP_EN (bit 5) powers off, status 0\n"
    "    0x605        ACPI SLEEP_STATUS_REG, reads 0\n"
    "    0xcf9        reset control: a write with bit 2 set resets: the VM ends, status 0\n"
    "    PIT (0x40-0x43, 0x61) and PIC (0x20, 0xa0, 0x4d0) are emulated in the kernel.\n"
    "    Other ports read as 0xff and ignore writes.\n"
    "\n"
    "ENVIRONMENT\n"
    "    WISP_KVM_DEVICE     the KVM device to open instead of /dev/kvm\n"
    "    WISP_LAUNCH_NS      CLOCK_MONOTONIC time in nanoseconds at which the launcher started\n"
    "                        wisp-vmm; boot markers then also report the time since then\n"
    "\n"
    "EXIT STATUS\n"
    "    0    the guest powered off or reset (ACPI, i8042, 0xcf9, triple fault), or wisp-vmm got\n"
    "         SIGTERM or SIGINT\n"
    "    V    the guest wrote V to the test-exit port 0xf4\n"
    "    1    runtime error: KVM unavailable, a kernel that cannot be loaded, a KVM internal "
    "error\n"
    "         or failed VM entry (a register dump is printed on stderr)\n"
    "    2    usage error: a wrong or missing option value\n"
    "\n"
    "EXAMPLES\n"
    "    wisp-vmm --kernel bzImage --cmdline \"console=ttyS0\" --mem 256 --cpus 2\n"
    "    wisp-vmm --kernel test.elf --serial file:/tmp/com1.log --boot-marker\n";

struct flag_value {
    const char *name;  /* "--mem" */
    const char *value; /* NULL for a flag without value */
};

static int parse_mem(const char *v, struct vmm_args *args, struct wisp_err *err)
{
    uint64_t bytes;
    int r = parse_size(v, 1ULL << 20, &bytes);
    if (r == -ERANGE)
        return wisp_err_set(err, EINVAL, "--mem: '%s' is too large", v);
    if (r < 0)
        return wisp_err_set(err, EINVAL,
                            "--mem: '%s' is not a size (MiB, or with a suffix: 512M, 2G)", v);
    if (bytes < VMM_MIN_MEM_BYTES)
        return wisp_err_set(err, EINVAL, "--mem: '%s' is below the minimum of 2 MiB", v);
    if (bytes > GUEST_MEM_MAX_BYTES)
        return wisp_err_set(err, EINVAL, "--mem: '%s' is above the maximum of %llu GiB", v,
                            GUEST_MEM_MAX_BYTES >> 30);
    if (bytes & 0xfff)
        return wisp_err_set(err, EINVAL, "--mem: '%s' is not a multiple of 4 KiB", v);
    args->mem_bytes = bytes;
    return 0;
}

static int parse_cpus(const char *v, struct vmm_args *args, struct wisp_err *err)
{
    uint64_t n;
    if (parse_u64(v, &n) < 0)
        return wisp_err_set(err, EINVAL, "--cpus: '%s' is not a number", v);
    if (n < 1 || n > VMM_MAX_CPUS)
        return wisp_err_set(err, EINVAL, "--cpus: '%s' is out of range (1 to %u)", v, VMM_MAX_CPUS);
    args->cpus = (unsigned)n;
    return 0;
}

static int parse_serial(const char *v, struct vmm_args *args, struct wisp_err *err)
{
    if (!strcmp(v, "stdio")) {
        args->serial = VMM_SERIAL_STDIO;
    } else if (!strcmp(v, "none")) {
        args->serial = VMM_SERIAL_NONE;
    } else if (!strncmp(v, "file:", 5) && v[5]) {
        args->serial = VMM_SERIAL_FILE;
        args->serial_path = v + 5;
    } else {
        return wisp_err_set(err, EINVAL, "--serial: '%s' is not stdio, none or file:PATH", v);
    }
    return 0;
}

static int parse_path(const char *flag, const char *v, const char **out, struct wisp_err *err)
{
    if (!*v)
        return wisp_err_set(err, EINVAL, "%s: the path is empty", flag);
    *out = v;
    return 0;
}

/* Applies one flag that takes a value. */
static int apply_value_flag(const struct flag_value *f, struct vmm_args *args, struct wisp_err *err)
{
    if (!strcmp(f->name, "--kernel"))
        return parse_path(f->name, f->value, &args->kernel, err);
    if (!strcmp(f->name, "--initrd"))
        return parse_path(f->name, f->value, &args->initrd, err);
    if (!strcmp(f->name, "--cmdline")) {
        args->cmdline = f->value;
        return 0;
    }
    if (!strcmp(f->name, "--mem"))
        return parse_mem(f->value, args, err);
    if (!strcmp(f->name, "--cpus"))
        return parse_cpus(f->value, args, err);
    return parse_serial(f->value, args, err); /* --serial, the only one left */
}

static bool flag_takes_value(const char *name)
{
    static const char *const with_value[] = {"--kernel", "--initrd", "--cmdline",
                                             "--mem",    "--cpus",   "--serial"};
    for (size_t i = 0; i < sizeof(with_value) / sizeof(with_value[0]); i++)
        if (!strcmp(name, with_value[i]))
            return true;
    return false;
}

/* Applies a flag without value; -EINVAL for an unknown one. */
static int apply_bool_flag(const char *name, struct vmm_args *args, struct wisp_err *err)
{
    if (!strcmp(name, "--help") || !strcmp(name, "-h"))
        args->action = VMM_HELP;
    else if (!strcmp(name, "--version") || !strcmp(name, "-V"))
        args->action = VMM_VERSION;
    else if (!strcmp(name, "--boot-marker"))
        args->boot_marker = true;
    else if (!strcmp(name, "--debug"))
        args->debug = true;
    else if (!strcmp(name, "--async-teardown"))
        args->async_teardown = true;
    else if (name[0] == '-')
        return wisp_err_set(err, EINVAL, "%s: unknown option (see --help)", name);
    else
        return wisp_err_set(err, EINVAL, "'%s': unexpected argument (options start with --)", name);
    return 0;
}

int vmm_args_parse(int argc, char *const argv[], struct vmm_args *args, struct wisp_err *err)
{
    *args = (struct vmm_args){.action = VMM_RUN,
                              .mem_bytes = VMM_DEFAULT_MEM_MIB << 20,
                              .cpus = 1,
                              .serial = VMM_SERIAL_STDIO};
    for (int i = 1; i < argc; i++) {
        char name[32];
        const char *arg = argv[i], *eq = strchr(arg, '=');
        size_t len = eq && arg[0] == '-' ? (size_t)(eq - arg) : strlen(arg);
        if (len >= sizeof(name))
            len = sizeof(name) - 1; /* too long for any known flag: reported as unknown */
        memcpy(name, arg, len);
        name[len] = '\0';
        int r;
        if (flag_takes_value(name)) {
            struct flag_value f = {.name = name, .value = eq ? eq + 1 : NULL};
            if (!eq) {
                if (i + 1 >= argc)
                    return wisp_err_set(err, EINVAL, "%s: missing value", name);
                f.value = argv[++i];
            }
            r = apply_value_flag(&f, args, err);
        } else if (eq && arg[0] == '-' &&
                   (!strcmp(name, "--boot-marker") || !strcmp(name, "--debug") ||
                    !strcmp(name, "--async-teardown") || !strcmp(name, "--help") ||
                    !strcmp(name, "--version"))) {
            r = wisp_err_set(err, EINVAL, "%s: takes no value", name);
        } else {
            r = apply_bool_flag(arg, args, err);
        }
        if (r < 0)
            return r;
    }
    if (args->action == VMM_RUN && !args->kernel)
        return wisp_err_set(err, EINVAL, "--kernel: missing (the kernel to boot is required)");
    return 0;
}
