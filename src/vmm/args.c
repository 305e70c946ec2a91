/* wisp-vmm's command line: a table of options, their checks, and the parser. */
#include "vmm/args.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "common/cpulist.h"
#include "common/parse.h"
#include "kvm/guest_mem.h"
#include "vmm/api.h"

static int parse_mem(const char *v, struct vm_config *args, struct wisp_err *err)
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

static int parse_mem_backend(const char *v, struct vm_config *args, struct wisp_err *err)
{
    return vm_config_mem_backend(args, v, "--mem-backend", err);
}

static int parse_thp(const char *v, struct vm_config *args, struct wisp_err *err)
{
    return vm_config_mem_switch(v, "--thp", &args->mem.thp, err);
}

static int parse_ksm(const char *v, struct vm_config *args, struct wisp_err *err)
{
    enum guest_mem_switch s;
    int r = vm_config_mem_switch(v, "--ksm", &s, err);
    if (r == 0)
        args->mem.ksm = s == GUEST_MEM_ON;
    return r;
}

static int parse_prefault(const char *v, struct vm_config *args, struct wisp_err *err)
{
    enum guest_mem_switch s;
    int r = vm_config_mem_switch(v, "--prefault", &s, err);
    if (r == 0)
        args->mem.prefault = s == GUEST_MEM_ON;
    return r;
}

static int parse_cpus(const char *v, struct vm_config *args, struct wisp_err *err)
{
    uint64_t n;
    if (parse_u64(v, &n) < 0)
        return wisp_err_set(err, EINVAL, "--cpus: '%s' is not a number", v);
    if (n < 1 || n > VMM_MAX_CPUS)
        return wisp_err_set(err, EINVAL, "--cpus: '%s' is out of range (1 to %u)", v, VMM_MAX_CPUS);
    args->cpus = (unsigned)n;
    return 0;
}

static int parse_serial(const char *v, struct vm_config *args, struct wisp_err *err)
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

static int parse_console_log_max(const char *v, struct vm_config *args, struct wisp_err *err)
{
    uint64_t n;
    if (parse_size(v, 1, &n) < 0 || (n && n < 8192))
        return wisp_err_set(err, EINVAL,
                            "--console-log-max: '%s' is not a size of at least 8K (or 0: no limit)",
                            v);
    args->console_log_max = n;
    return 0;
}

static int parse_path(const char *flag, const char *v, const char **out, struct wisp_err *err)
{
    if (!*v)
        return wisp_err_set(err, EINVAL, "%s: the path is empty", flag);
    *out = v;
    return 0;
}

static int parse_kernel(const char *v, struct vm_config *args, struct wisp_err *err)
{
    return parse_path("--kernel", v, &args->kernel, err);
}

static int parse_initrd(const char *v, struct vm_config *args, struct wisp_err *err)
{
    return parse_path("--initrd", v, &args->initrd, err);
}

static int parse_cmdline(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->cmdline = v;
    return 0;
}

static int parse_console(const char *v, struct vm_config *args, struct wisp_err *err)
{
    if (!strcmp(v, "serial"))
        args->console = VMM_CONSOLE_SERIAL;
    else if (!strcmp(v, "virtio"))
        args->console = VMM_CONSOLE_VIRTIO;
    else
        return wisp_err_set(err, EINVAL, "--console: '%s' is not serial or virtio", v);
    return 0;
}

/* --rng, or --rng=bps=N[,burst=N]: the virtio-rng device, rate-limited to N bytes/s. */
static int parse_rng(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->rng = true;
    args->rng_params = (struct virtio_rng_params){0};
    if (!v)
        return 0;
    char buf[256];
    struct kv_item kv[4];
    if (strlen(v) >= sizeof(buf))
        return wisp_err_set(err, EINVAL, "--rng: '%s' is too long", v);
    int n = parse_kv_list(v, buf, kv, 4);
    if (n < 0)
        return wisp_err_set(err, EINVAL, "--rng: '%s' is not a list of key=value", v);
    for (int i = 0; i < n; i++) {
        uint64_t *dst = !strcmp(kv[i].key, "bps")     ? &args->rng_params.bytes_per_sec
                        : !strcmp(kv[i].key, "burst") ? &args->rng_params.burst
                                                      : NULL;
        if (!dst)
            return wisp_err_set(err, EINVAL, "--rng: unknown key '%s' (bps, burst)", kv[i].key);
        if (!kv[i].value || parse_size(kv[i].value, 1, dst) < 0)
            return wisp_err_set(err, EINVAL, "--rng: %s: '%s' is not a number of bytes", kv[i].key,
                                kv[i].value ? kv[i].value : "");
    }
    return 0;
}

/* --vsock cid=N,uds=PATH: the virtio-vsock device (docs/vsock.md). */
static int parse_vsock(const char *v, struct vm_config *args, struct wisp_err *err)
{
    char buf[512];
    struct kv_item kv[4];
    if (strlen(v) >= sizeof(buf))
        return wisp_err_set(err, EINVAL, "--vsock: '%.64s...' is too long", v);
    int n = parse_kv_list(v, buf, kv, 4);
    if (n < 0)
        return wisp_err_set(err, EINVAL, "--vsock: '%s' is not a list of key=value", v);
    uint64_t cid = 0;
    const char *uds = NULL;
    for (int i = 0; i < n; i++) {
        if (!kv[i].value || !kv[i].value[0])
            return wisp_err_set(err, EINVAL, "--vsock: %s needs a value", kv[i].key);
        if (!strcmp(kv[i].key, "cid")) {
            if (parse_u64(kv[i].value, &cid) < 0 || cid < VSOCK_MIN_GUEST_CID ||
                cid > VSOCK_MAX_GUEST_CID)
                return wisp_err_set(err, EINVAL, "--vsock: cid: '%s' is not a number in %u..%u",
                                    kv[i].value, VSOCK_MIN_GUEST_CID, VSOCK_MAX_GUEST_CID);
        } else if (!strcmp(kv[i].key, "uds")) {
            uds = kv[i].value;
        } else {
            return wisp_err_set(err, EINVAL, "--vsock: unknown key '%s' (cid, uds)", kv[i].key);
        }
    }
    if (!cid || !uds)
        return wisp_err_set(err, EINVAL, "--vsock: give cid=N and uds=PATH");
    args->vsock = true;
    args->vsock_params.guest_cid = cid;
    return vm_config_set_string(args, &args->vsock_params.uds_path, uds, err);
}

static int parse_drive(const char *v, struct vm_config *args, struct wisp_err *err)
{
    if (args->nr_drives == VMM_MAX_DRIVES)
        return wisp_err_set(err, EINVAL, "--drive: more than %d drives", VMM_MAX_DRIVES);
    char *buf = vm_config_strdup(args, v, err); /* the parameters point into it */
    if (!buf)
        return -ENOMEM;
    int r = virtio_blk_params_parse(v, buf, &args->drives[args->nr_drives], err);
    if (r == 0)
        args->nr_drives++;
    return r;
}

static int parse_net(const char *v, struct vm_config *args, struct wisp_err *err)
{
    if (args->nr_nics == VMM_MAX_NICS)
        return wisp_err_set(err, EINVAL, "--net: more than %d NICs", VMM_MAX_NICS);
    char *buf = vm_config_strdup(args, v, err);
    if (!buf)
        return -ENOMEM;
    int r = virtio_net_params_parse(v, buf, &args->nics[args->nr_nics], err);
    if (r == 0)
        args->nr_nics++;
    return r;
}

/* --pmem path=FILE[,id=ID][,ro|,cow|,rw]: a virtio-pmem device (repeatable; pmem.h). */
static int parse_pmem(const char *v, struct vm_config *args, struct wisp_err *err)
{
    if (args->nr_pmems == VMM_MAX_PMEM)
        return wisp_err_set(err, EINVAL, "--pmem: more than %d pmem devices", VMM_MAX_PMEM);
    char *buf = vm_config_strdup(args, v, err); /* the parameters point into it */
    if (!buf)
        return -ENOMEM;
    struct virtio_pmem_params *p = &args->pmems[args->nr_pmems];
    int r = virtio_pmem_params_parse(v, buf, p, err);
    if (r == 0)
        r = virtio_pmem_check_file("--pmem", p->path, p->mode, err);
    if (r == 0)
        args->nr_pmems++;
    return r;
}

/* --fs tag=NAME,path=DIR[,ro][,id=ID]: a virtio-9p share (docs/9p.md). */
static int parse_fs(const char *v, struct vm_config *args, struct wisp_err *err)
{
    if (args->nr_fs == VMM_MAX_FS)
        return wisp_err_set(err, EINVAL, "--fs: more than %d shares", VMM_MAX_FS);
    char *buf = vm_config_strdup(args, v, err);
    if (!buf)
        return -ENOMEM;
    struct kv_item kv[8];
    int n = parse_kv_list(v, buf, kv, 8);
    if (n < 0)
        return wisp_err_set(err, EINVAL, "--fs: '%s' is not a list of key=value", v);
    struct virtio_9p_params p = {0};
    for (int i = 0; i < n; i++) {
        const char *key = kv[i].key, *val = kv[i].value;
        if (!strcmp(key, "ro") && (!val || parse_bool(val, &p.read_only) == 0)) {
            if (!val)
                p.read_only = true;
            continue;
        }
        if (!val || !*val)
            return wisp_err_set(err, EINVAL, "--fs: %s needs a value", key);
        if (!strcmp(key, "tag"))
            p.tag = val;
        else if (!strcmp(key, "path"))
            p.path = val;
        else if (!strcmp(key, "id"))
            p.id = val;
        else
            return wisp_err_set(err, EINVAL, "--fs: unknown key '%s' (tag, path, ro, id)", key);
    }
    if (!p.tag || !p.path)
        return wisp_err_set(err, EINVAL, "--fs: give tag=NAME and path=DIR");
    int r = p9_check_tag(p.tag, "--fs", err);
    if (r < 0)
        return r;
    args->fs[args->nr_fs++] = p;
    return 0;
}

static int parse_cmdline_devices(const char *v, struct vm_config *args, struct wisp_err *err)
{
    if (parse_bool(v, &args->cmdline_devices) < 0)
        return wisp_err_set(err, EINVAL, "--cmdline-devices: '%s' is not on or off", v);
    return 0;
}

static int parse_test_socket(const char *v, struct vm_config *args, struct wisp_err *err)
{
    return parse_path("--test-socket", v, &args->test_socket, err);
}

static int parse_api_sock(const char *v, struct vm_config *args, struct wisp_err *err)
{
    return parse_path("--api-sock", v, &args->api.api_sock, err);
}

/* --api-sock-fd N: a listening unix stream socket the parent made and left open (wispd binds
 * a VM's API socket itself, so that its configuration can be sent at once and wait there until
 * wisp-vmm reads it). Checked here, before any filter is loaded and anything else is opened. */
static int parse_api_sock_fd(const char *v, struct vm_config *args, struct wisp_err *err)
{
    uint64_t n;
    if (parse_u64(v, &n) < 0 || n > INT_MAX)
        return wisp_err_set(err, EINVAL, "--api-sock-fd: '%s' is not a file descriptor number", v);
    if (n < 3)
        return wisp_err_set(err, EINVAL,
                            "--api-sock-fd: %s is a standard stream (0-2), not a socket", v);
    int fd = (int)n, domain = 0, type = 0, listening = 0;
    socklen_t len = sizeof(int);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return wisp_err_sys(err, errno, "--api-sock-fd: fd %d", fd);
    if (!S_ISSOCK(st.st_mode))
        return wisp_err_set(err, EINVAL, "--api-sock-fd: fd %d is not a socket", fd);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &(socklen_t){sizeof(int)}) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &(socklen_t){sizeof(int)}) < 0)
        return wisp_err_sys(err, errno, "--api-sock-fd: fd %d: getsockopt", fd);
    if (domain != AF_UNIX || type != SOCK_STREAM)
        return wisp_err_set(err, EINVAL, "--api-sock-fd: fd %d is not a unix stream socket", fd);
    if (!listening)
        return wisp_err_set(err, EINVAL, "--api-sock-fd: fd %d is not listening", fd);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return wisp_err_sys(err, errno, "--api-sock-fd: fd %d: fcntl", fd);
    args->api.has_api_sock_fd = true;
    args->api.api_sock_fd = fd;
    return 0;
}

static int parse_config_file(const char *v, struct vm_config *args, struct wisp_err *err)
{
    return parse_path("--config-file", v, &args->api.config_file, err);
}

/* --id: the instance id GET / reports (Firecracker's --id: 1 to 64 characters). */
static int parse_id(const char *v, struct vm_config *args, struct wisp_err *err)
{
    size_t n = strlen(v);
    if (n == 0 || n > 64 ||
        strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789_-.") != n)
        return wisp_err_set(err, EINVAL,
                            "--id: '%s' is not 1 to 64 letters, digits, '_', '-' or '.'", v);
    args->api.id = v;
    return 0;
}

/* --uid/--gid: the unprivileged user and group wisp-vmm becomes (vmm/privileges.h); 0 (root) is
 * refused (parse_unprivileged_id), the point being to leave it. */
static int parse_uid(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->privileges.has_uid = true;
    args->privileges.drop = args->privileges.has_uid && args->privileges.has_gid;
    return parse_unprivileged_id("--uid", v, &args->privileges.uid, err);
}

static int parse_gid(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->privileges.has_gid = true;
    args->privileges.drop = args->privileges.has_uid && args->privileges.has_gid;
    return parse_unprivileged_id("--gid", v, &args->privileges.gid, err);
}

static const struct {
    const char *name;
    int cap;
} keepable[] = {
    {"chown", CAP_CHOWN},
    {"dac_override", CAP_DAC_OVERRIDE},
    {"dac_read_search", CAP_DAC_READ_SEARCH},
    {"fowner", CAP_FOWNER},
    {"fsetid", CAP_FSETID},
};

/* --keep-caps: only capabilities a file server needs (docs/security.md). */
static int parse_caps(const char *v, uint64_t *caps, struct wisp_err *err)
{
    *caps = 0;
    for (const char *p = v; *p;) {
        size_t n = strcspn(p, ","), i;
        for (i = 0; i < sizeof(keepable) / sizeof(keepable[0]); i++)
            if (strlen(keepable[i].name) == n && !strncmp(p, keepable[i].name, n))
                break;
        if (i == sizeof(keepable) / sizeof(keepable[0]))
            return wisp_err_set(err, EINVAL,
                                "--keep-caps: '%.*s' is not one of chown, dac_override, "
                                "dac_read_search, fowner, fsetid",
                                (int)n, p);
        *caps |= 1ULL << keepable[i].cap;
        p += n + (p[n] == ',');
    }
    if (!*caps)
        return wisp_err_set(err, EINVAL, "--keep-caps: no capability named");
    return 0;
}

/* --keep-caps: file capabilities kept as UID (a jailed file server: wisp-oci's 9p rootfs). */
static int parse_keep_caps(const char *v, struct vm_config *args, struct wisp_err *err)
{
    return parse_caps(v, &args->privileges.keep_caps, err);
}

static int set_help(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->action = VMM_HELP;
    return 0;
}

static int set_version(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->action = VMM_VERSION;
    return 0;
}

static int set_boot_marker(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->boot_marker = true;
    return 0;
}

static int set_debug(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->debug = true;
    return 0;
}

static int set_async_teardown(const char *v, struct vm_config *args, struct wisp_err *err)
{
    args->async_teardown = true;
    return 0;
}

/* "LIST[/LIST]...": the i-th CPU list for vCPU i, the last for the vCPUs after it. */
static int parse_vcpu_affinity(const char *v, struct vm_config *args, struct wisp_err *err)
{
    for (const char *p = v;;) {
        size_t n = strcspn(p, "/");
        cpu_set_t set;
        int r = cpulist_parse(p, n, &set);
        if (r < 0)
            return wisp_err_set(err, EINVAL,
                                "--vcpu-affinity %s: '%.*s' is not a CPU list (0-3,8) of CPUs "
                                "below %d",
                                v, (int)n, p, CPU_SETSIZE);
        if (!p[n])
            break;
        p += n + 1;
    }
    args->vcpu_affinity = v;
    return 0;
}

static int parse_seccomp(const char *v, struct vm_config *args, struct wisp_err *err)
{
    static const char *const modes[] = {"on", "log", "off", "audit"}; /* vmm_seccomp_mode */
    for (int m = 0; m < 4; m++)
        if (!strcmp(v, modes[m])) {
            args->seccomp = m;
            return 0;
        }
    return wisp_err_set(err, EINVAL, "--seccomp=%s: expected on, log, off or audit", v);
}

enum option_kind {
    OPT_FLAG,     /* no value */
    OPT_VALUE,    /* a value: "--x V" or "--x=V" */
    OPT_OPTIONAL, /* a value only as "--x=V" */
};

struct option {
    const char *name, *alias;
    enum option_kind kind;
    int (*apply)(const char *value, struct vm_config *args, struct wisp_err *err);
};

/* Every option of wisp-vmm (the usage text, vmm/usage.c, documents them). */
static const struct option options[] = {
    {"--kernel", NULL, OPT_VALUE, parse_kernel},
    {"--initrd", NULL, OPT_VALUE, parse_initrd},
    {"--cmdline", NULL, OPT_VALUE, parse_cmdline},
    {"--mem", NULL, OPT_VALUE, parse_mem},
    {"--mem-backend", NULL, OPT_VALUE, parse_mem_backend},
    {"--thp", NULL, OPT_VALUE, parse_thp},
    {"--ksm", NULL, OPT_VALUE, parse_ksm},
    {"--prefault", NULL, OPT_VALUE, parse_prefault},
    {"--cpus", NULL, OPT_VALUE, parse_cpus},
    {"--vcpu-affinity", NULL, OPT_VALUE, parse_vcpu_affinity},
    {"--serial", NULL, OPT_VALUE, parse_serial},
    {"--console", NULL, OPT_VALUE, parse_console},
    {"--console-log-max", NULL, OPT_VALUE, parse_console_log_max},
    {"--rng", NULL, OPT_OPTIONAL, parse_rng},
    {"--drive", NULL, OPT_VALUE, parse_drive},
    {"--net", NULL, OPT_VALUE, parse_net},
    {"--vsock", NULL, OPT_VALUE, parse_vsock},
    {"--pmem", NULL, OPT_VALUE, parse_pmem},
    {"--fs", NULL, OPT_VALUE, parse_fs},
    {"--cmdline-devices", NULL, OPT_VALUE, parse_cmdline_devices},
    {"--test-socket", NULL, OPT_VALUE, parse_test_socket},
    {"--api-sock", NULL, OPT_VALUE, parse_api_sock},
    {"--api-sock-fd", NULL, OPT_VALUE, parse_api_sock_fd},
    {"--config-file", NULL, OPT_VALUE, parse_config_file},
    {"--id", NULL, OPT_VALUE, parse_id},
    {"--boot-marker", NULL, OPT_FLAG, set_boot_marker},
    {"--debug", NULL, OPT_FLAG, set_debug},
    {"--async-teardown", NULL, OPT_FLAG, set_async_teardown},
    {"--seccomp", NULL, OPT_VALUE, parse_seccomp},
    {"--uid", NULL, OPT_VALUE, parse_uid},
    {"--gid", NULL, OPT_VALUE, parse_gid},
    {"--keep-caps", NULL, OPT_VALUE, parse_keep_caps},
    {"--help", "-h", OPT_FLAG, set_help},
    {"--version", "-V", OPT_FLAG, set_version},
};

static const struct option *find_option(const char *name)
{
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++)
        if (!strcmp(name, options[i].name) || (options[i].alias && !strcmp(name, options[i].alias)))
            return &options[i];
    return NULL;
}

/* Applies argv[*i] (and its value, which may be argv[*i + 1]). */
static int apply_arg(int argc, char *const argv[], int *i, struct vm_config *args,
                     struct wisp_err *err)
{
    const char *arg = argv[*i], *eq = arg[0] == '-' ? strchr(arg, '=') : NULL;
    char name[32];
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    if (len >= sizeof(name))
        len = sizeof(name) - 1; /* too long for any known option: reported as unknown */
    memcpy(name, arg, len);
    name[len] = '\0';
    const struct option *o = find_option(name);
    if (!o && arg[0] == '-')
        return wisp_err_set(err, EINVAL, "%s: unknown option (see --help)", name);
    if (!o)
        return wisp_err_set(err, EINVAL, "'%s': unexpected argument (options start with --)", arg);
    const char *value = eq ? eq + 1 : NULL;
    if (o->kind == OPT_FLAG && value)
        return wisp_err_set(err, EINVAL, "%s: takes no value", name);
    if (o->kind == OPT_VALUE && !value) {
        if (*i + 1 >= argc)
            return wisp_err_set(err, EINVAL, "%s: missing value", name);
        value = argv[++*i];
    }
    return o->apply(value, args, err);
}

/* Checks that need every option seen. */
static int check_combination(const struct vm_config *args, struct wisp_err *err)
{
    if (args->action != VMM_RUN)
        return 0;
    int r = vm_config_check(args, err);
    if (r < 0)
        return r;
    if (args->privileges.has_uid != args->privileges.has_gid)
        return wisp_err_set(err, EINVAL, "%s: missing (--uid and --gid go together)",
                            args->privileges.has_uid ? "--gid" : "--uid");
    if (args->privileges.keep_caps && !args->privileges.drop)
        return wisp_err_set(err, EINVAL, "--keep-caps: only with --uid and --gid");
    if (args->api.api_sock && args->api.has_api_sock_fd)
        return wisp_err_set(err, EINVAL, "--api-sock-fd: not with --api-sock (one API socket)");
    if (!args->kernel && !args->test_socket && !args->api.api_sock && !args->api.has_api_sock_fd)
        return wisp_err_set(err, EINVAL,
                            "--kernel: missing (the kernel to boot is required, from --kernel, "
                            "the boot-source of a --config-file, or later through --api-sock)");
    return 0;
}

static int apply_args(int argc, char *const argv[], struct vm_config *args, struct wisp_err *err)
{
    for (int i = 1; i < argc; i++) {
        int r = apply_arg(argc, argv, &i, args, err);
        if (r < 0)
            return r;
    }
    return 0;
}

/* With --config-file, the file is applied first and the options again over it: an option on
 * the command line wins over the file (drives and NICs of both are added, the file's first). */
int vmm_args_parse(int argc, char *const argv[], struct vm_config *args, struct wisp_err *err)
{
    vm_config_init(args);
    int r = apply_args(argc, argv, args, err);
    if (r < 0 || args->action != VMM_RUN || !args->api.config_file)
        return r < 0 ? r : check_combination(args, err);
    const char *file = args->api.config_file;
    vm_config_free(args);
    vm_config_init(args);
    r = vm_config_load_file(args, file, err);
    if (r == 0)
        r = apply_args(argc, argv, args, err);
    return r < 0 ? r : check_combination(args, err);
}
