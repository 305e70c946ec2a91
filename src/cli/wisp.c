/* wisp: the command line for wispd (docs/wispd.md, "The wisp CLI"): one request to wispd's
 * API per command (events -f: a long poll after another), answers as text or --json. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "common/cleanup.h"

static const char usage[] =
    "NAME\n"
    "    wisp - run and manage wisp VMs through wispd\n"
    "\n"
    "SYNOPSIS\n"
    "    wisp [--socket PATH] [--json] COMMAND [ARGS]\n"
    "    wisp COMMAND --help\n"
    "\n"
    "DESCRIPTION\n"
    "    Drives wispd, the wisp daemon, through its API socket (docs/wispd.md; every command\n"
    "    and its --json output: docs/wisp.md). `wisp run` also works without a daemon: it then\n"
    "    runs wisp-vmm in the foreground.\n"
    "\n"
    "COMMANDS\n"
    "  VMs\n"
    "    define FILE              define a VM from a JSON definition (- for stdin)\n"
    "    create NAME --kernel K [MACHINE OPTIONS]\n"
    "                             define a VM from wisp-vmm's machine options: --initrd I,\n"
    "                             --cmdline C, --mem SIZE, --cpus N, --drive path=F[,...],\n"
    "                             --net network=NAME|tap=T[,mac=M][,id=ID], --console\n"
    "                             serial|virtio, --restart POLICY (a NIC on a network gets a\n"
    "                             tap on its bridge; every NIC without mac= a MAC of its own)\n"
    "    import-libvirt [--print] FILE.xml\n"
    "                             define a VM from a libvirt domain (the supported subset)\n"
    "    ls, list                 the VMs: name, state, pid, restarts, last exit\n"
    "    show NAME                one VM, with its definition\n"
    "    rm [-f] NAME             remove a stopped VM (-f: kill a running one first)\n"
    "  Lifecycle\n"
    "    start NAME               start it; returns once the guest runs\n"
    "    stop NAME                Ctrl-Alt-Del, SIGTERM after stop_timeout_s, then SIGKILL\n"
    "    kill NAME                SIGKILL at once\n"
    "    restart NAME             stop, then start\n"
    "    pause NAME, resume NAME  park every vCPU, let them go on\n"
    "    run [--rm] [NAME] --kernel K [MACHINE OPTIONS]\n"
    "                             create, start and attach the console: the one-command demo\n"
    "  Console and monitoring\n"
    "    logs [-f] [--tail N] NAME\n"
    "                             the console's output since the VM's last start (-f: follow)\n"
    "    console [--replay BYTES] NAME\n"
    "                             attach a terminal to the console; Ctrl-] detaches\n"
    "    events [-f]              the events: define, start, stop, crash, restart, ...\n"
    "    stats NAME...            CPU, memory, block and net I/O\n"
    "    limits                   the host limits the next VM could hit\n"
    "    reclaim                  the automatic balloon: host pressure, the VMs' targets\n"
    "  Snapshots\n"
    "    snapshot NAME DIR|FILE   save a running or paused VM\n"
    "    restore NAME FROM        start NAME from a snapshot (defines NAME if needed)\n"
    "    clone NAME --count N [--prefix P]\n"
    "                             N running copies of NAME, P-1 ... P-N, from one snapshot\n"
    "  Networks\n"
    "    net create NAME --subnet CIDR [--gateway IP] [--dhcp-range A-B] [--nat|--no-nat]\n"
    "               [--dns|--no-dns]\n"
    "                             a bridge wb-NAME with the gateway's address (default the\n"
    "                             first), a dnsmasq for DHCP (and DNS), NAT with --nat;\n"
    "                             refused when the subnet overlaps the host's routes or\n"
    "                             addresses or another network\n"
    "    net ls, net show NAME    the networks: subnet, bridge, dnsmasq, the VMs on each\n"
    "    net rm [-f|--force] NAME remove one (refused while VMs have NICs on it, unless -f)\n"
    "\n"
    "OPTIONS\n"
    "    --socket PATH  wispd's socket (default $WISP_SOCKET, else /run/wisp/wispd.sock)\n"
    "    --json         print the answer as JSON for scripts (before or after the command;\n"
    "                   events and clone: one JSON object a line, or the summary)\n"
    "    -h, --help     this text; `wisp COMMAND --help` for one command\n"
    "\n"
    "EXIT STATUS\n"
    "    Exit status: 0 done; 1 wispd refused or failed the request (the message says\n"
    "    why); 2 usage error; 3 wispd cannot be reached; 4 no VM (or network) of that name;\n"
    "    5 the VM's state does not allow it, or the name is taken, a MAC or a subnet is in\n"
    "    use, a network has VMs; 6 a host limit would be passed.\n"
    "    `run` exits with the guest's status (128 + N when killed by signal N).\n"
    "\n"
    "ENVIRONMENT\n"
    "    WISP_SOCKET    wispd's socket when --socket is not given\n"
    "\n"
    "EXAMPLES\n"
    "    wisp run --rm --kernel guest/demo.elf --mem 16\n"
    "    wisp create web --kernel vmlinux --cmdline console=ttyS0 --mem 256 \\\n"
    "        --drive path=web.qcow2 --net tap=tap-web && wisp start web && wisp console web\n"
    "    wisp clone web --count 100 --prefix web-copy\n"
    "    wisp ls --json | jq -r '.[] | select(.state == \"running\") | .name'\n";

static void print_vm_line(json_t *vm)
{
    printf("%-24s %-9s %8lld %8lld  %s\n", json_string_value(json_object_get(vm, "name")),
           json_string_value(json_object_get(vm, "state")),
           (long long)json_integer_value(json_object_get(vm, "pid")),
           (long long)json_integer_value(json_object_get(vm, "restarts")),
           json_string_value(json_object_get(vm, "last_exit")));
}

/* Does the request and prints the answer; returns the exit status. `show` prints a success. */
static int call(const char *method, const char *path, const char *body,
                void (*show)(json_t *answer))
{
    unsigned status;
    cleanup_free char *answer = NULL;
    if (cli_request(method, path, body, &status, &answer) < 0)
        return EXIT_NO_DAEMON;
    json_t *j = json_loads(answer, 0, NULL);
    if (status >= 300) {
        const char *m = json_string_value(json_object_get(j, "fault_message"));
        fprintf(stderr, "wisp: %s\n", m ? m : answer);
    } else if (cli_json) {
        if (j) {
            json_dumpf(j, stdout, JSON_INDENT(2));
            putchar('\n');
        }
    } else if (show && j) {
        show(j);
    }
    json_decref(j);
    return cli_exit_for(status);
}

static void show_list(json_t *a)
{
    size_t i;
    json_t *vm;
    printf("%-24s %-9s %8s %8s  %s\n", "NAME", "STATE", "PID", "RESTARTS", "LAST EXIT");
    json_array_foreach(a, i, vm) print_vm_line(vm);
}

static void show_vm(json_t *vm)
{
    printf("name:      %s\nstate:     %s\npid:       %lld\nrestarts:  %lld\nlast exit: %s\n",
           json_string_value(json_object_get(vm, "name")),
           json_string_value(json_object_get(vm, "state")),
           (long long)json_integer_value(json_object_get(vm, "pid")),
           (long long)json_integer_value(json_object_get(vm, "restarts")),
           json_string_value(json_object_get(vm, "last_exit")));
    printf("definition: ");
    json_dumpf(json_object_get(vm, "definition"), stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
    putchar('\n');
}

static void show_state(json_t *vm)
{
    printf("%s: %s\n", json_string_value(json_object_get(vm, "name")),
           json_string_value(json_object_get(vm, "state")));
}

static void show_raw(json_t *j)
{
    json_dumpf(j, stdout, JSON_INDENT(2));
    putchar('\n');
}

static char *read_file(const char *path)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "re") : stdin;
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap && n < (1 << 20)) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
    }
    if (f != stdin)
        fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

/* --drive path=F,format=..,readonly=on,id=ID and --net tap=T,mac=M,id=ID, wisp-vmm's
 * spelling (the subset wispd's definitions have), into a definition's drives[] or nics[]. */
static int parse_device(const char *opt, const char *v, bool drive, size_t index, json_t *list)
{
    cleanup_free char *copy = strdup(v);
    json_t *o = json_object();
    char *save = NULL;
    for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) {
            json_decref(o);
            return cli_usage_error("%s: '%s' is not KEY=VALUE", opt, kv);
        }
        *eq = '\0';
        const char *val = eq + 1;
        if (drive && !strcmp(kv, "path"))
            json_object_set_new(o, "path", json_string(val));
        else if (drive && !strcmp(kv, "format"))
            json_object_set_new(o, "format", json_string(val));
        else if (drive && !strcmp(kv, "readonly") && (!strcmp(val, "on") || !strcmp(val, "off")))
            json_object_set_new(o, "read_only", json_boolean(!strcmp(val, "on")));
        else if (!drive && (!strcmp(kv, "tap") || !strcmp(kv, "network")))
            json_object_set_new(o, kv, json_string(val));
        else if (!drive && !strcmp(kv, "mac"))
            json_object_set_new(o, "mac", json_string(val));
        else if (!strcmp(kv, "id"))
            json_object_set_new(o, "id", json_string(val));
        else {
            json_decref(o);
            return cli_usage_error("%s: unknown key or value '%s=%s' (%s)", opt, kv, val,
                                   drive ? "path, format, readonly=on|off, id"
                                         : "network or tap, mac, id");
        }
    }
    if (drive ? !json_object_get(o, "path")
              : !json_object_get(o, "tap") == !json_object_get(o, "network")) {
        json_decref(o);
        return cli_usage_error("%s: %s%s", opt, drive ? "path=" : "give one of network= and tap=",
                               drive ? " is missing" : "");
    }
    if (!json_object_get(o, "id")) {
        char id[32];
        snprintf(id, sizeof(id), drive ? (index ? "drive%zu" : "rootfs") : "net%zu", index);
        json_object_set_new(o, "id", json_string(id));
    }
    if (drive)
        json_object_set_new(o, "root", json_boolean(index == 0));
    json_array_append_new(list, o);
    return 0;
}

static int parse_mem_mib(const char *v, long long *out)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || n <= 0)
        return -1;
    if (!strcmp(end, "G") || !strcmp(end, "g"))
        n *= 1024;
    else if (*end && strcmp(end, "M") && strcmp(end, "m"))
        return -1;
    *out = n;
    return 0;
}

int cli_build_def(int argc, char **argv, json_t **out)
{
    static const struct option opts[] = {
        {"kernel", required_argument, NULL, 'k'},  {"initrd", required_argument, NULL, 'i'},
        {"cmdline", required_argument, NULL, 'c'}, {"mem", required_argument, NULL, 'm'},
        {"cpus", required_argument, NULL, 'p'},    {"drive", required_argument, NULL, 'd'},
        {"net", required_argument, NULL, 'n'},     {"console", required_argument, NULL, 'o'},
        {"restart", required_argument, NULL, 'r'}, {0}};
    if (argc < 2 || argv[1][0] == '-')
        return cli_usage_error("%s", "create: give NAME, then its options");
    json_t *def = json_pack("{s:s}", "name", argv[1]);
    json_t *drives = json_array(), *nics = json_array();
    int c, ret = 0;
    optind = 2;
    opterr = 0;
    while (ret == 0 && (c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        long long n;
        char *end, *abs;
        switch (c) {
        case 'k':
        case 'i':
            abs = realpath(optarg, NULL); /* wispd wants absolute paths */
            json_object_set_new(def, c == 'k' ? "kernel" : "initrd",
                                json_string(abs ? abs : optarg));
            free(abs);
            break;
        case 'c':
            json_object_set_new(def, "cmdline", json_string(optarg));
            break;
        case 'm':
            if (parse_mem_mib(optarg, &n) < 0)
                ret = cli_usage_error("--mem: '%s' is not a size (MiB, or with M or G)", optarg);
            else
                json_object_set_new(def, "memory_mib", json_integer(n));
            break;
        case 'p':
            n = strtoll(optarg, &end, 10);
            if (*end || end == optarg || n < 1)
                ret = cli_usage_error("--cpus: '%s' is not a number of vCPUs", optarg);
            else
                json_object_set_new(def, "vcpus", json_integer(n));
            break;
        case 'd':
            ret = parse_device("--drive", optarg, true, json_array_size(drives), drives);
            break;
        case 'n':
            ret = parse_device("--net", optarg, false, json_array_size(nics), nics);
            break;
        case 'o':
            json_object_set_new(def, "console", json_string(optarg));
            break;
        case 'r':
            json_object_set_new(def, "restart_policy", json_string(optarg));
            break;
        default:
            ret = cli_usage_error("create: unknown option or missing value '%s'", argv[optind - 1]);
        }
    }
    if (ret == 0 && optind < argc)
        ret = cli_usage_error("create: unexpected argument '%s'", argv[optind]);
    if (ret == 0 && !json_object_get(def, "kernel"))
        ret = cli_usage_error("%s", "create: --kernel is missing");
    if (json_array_size(drives))
        json_object_set(def, "drives", drives);
    if (json_array_size(nics))
        json_object_set(def, "nics", nics);
    json_decref(drives);
    json_decref(nics);
    if (ret == 0)
        *out = def;
    else
        json_decref(def);
    return ret;
}

static int cmd_create(int argc, char **argv)
{
    json_t *def;
    int ret = cli_build_def(argc, argv, &def);
    if (ret == 0) {
        cleanup_free char *text = json_dumps(def, 0);
        ret = call("POST", "/v1/vms", text, show_state);
        json_decref(def);
    }
    return ret;
}

static const char *const vm_actions[] = {"start", "stop", "kill", "restart", "pause", "resume"};

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"socket", required_argument, NULL, 's'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {0}};
    cli_sock_path = getenv("WISP_SOCKET") ? getenv("WISP_SOCKET") : "/run/wisp/wispd.sock";
    int c;
    /* "+": options stop at the command, whose own flags (rm -f, events -f) are its own. */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (c == 's')
            cli_sock_path = optarg;
        else if (c == 'j')
            cli_json = true;
        else if (c == 'h') {
            fputs(usage, stdout);
            return 0;
        } else {
            fputs(usage, stderr);
            return EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return cli_usage_error("%s", "no command given");
    char **av = argv + optind;
    int ac = argc - optind;
    /* --json may also follow the command: `wisp ls --json`. */
    for (int i = 1; i < ac; i++)
        if (!strcmp(av[i], "--json")) {
            cli_json = true;
            memmove(&av[i], &av[i + 1], (size_t)(ac - i - 1) * sizeof(*av));
            ac--;
            i--;
        }
    const char *cmd = av[0];
    char path[256];
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help")) {
        fputs(usage, stdout);
        return 0;
    }
    /* wisp VERB --help */
    if (ac >= 2 && (!strcmp(av[1], "--help") || !strcmp(av[1], "-h"))) {
        const char *h = cli_verb_help(cmd);
        fputs(h ? h : usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "ls") || !strcmp(cmd, "list")) {
        if (ac != 1)
            return cli_usage_error("ls: unexpected argument '%s'", av[1]);
        return call("GET", "/v1/vms", NULL, show_list);
    }
    if (!strcmp(cmd, "limits"))
        return ac != 1 ? cli_usage_error("limits: unexpected argument '%s'", av[1])
                       : call("GET", "/v1/limits", NULL, show_raw);
    if (!strcmp(cmd, "reclaim"))
        return ac != 1 ? cli_usage_error("reclaim: unexpected argument '%s'", av[1])
                       : call("GET", "/v1/reclaim", NULL, show_raw);
    static const struct {
        const char *verb;
        int (*fn)(int argc, char **argv);
    } verbs[] = {
        {"logs", cmd_logs},   {"console", cmd_console},   {"events", cmd_events},
        {"stats", cmd_stats}, {"snapshot", cmd_snapshot}, {"restore", cmd_restore},
        {"clone", cmd_clone}, {"run", cmd_run},           {"import-libvirt", cmd_import_libvirt},
    };
    for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
        if (!strcmp(cmd, verbs[i].verb))
            return verbs[i].fn(ac, av);
    if (!strcmp(cmd, "define")) {
        if (ac != 2)
            return cli_usage_error("%s", "define: give one FILE (a JSON definition, - for stdin)");
        cleanup_free char *text = read_file(av[1]);
        if (!text) {
            fprintf(stderr, "wisp: %s: %s\n", av[1], strerror(errno));
            return EXIT_USAGE;
        }
        return call("POST", "/v1/vms", text, show_state);
    }
    if (!strcmp(cmd, "create"))
        return cmd_create(ac, av);
    if (!strcmp(cmd, "net"))
        return cmd_net(ac, av);
    if (!strcmp(cmd, "rm")) {
        bool force = ac == 3 && !strcmp(av[1], "-f");
        if (ac != 2 + force)
            return cli_usage_error("%s", "rm: give [-f] NAME");
        snprintf(path, sizeof(path), "/v1/vms/%s%s", av[1 + force], force ? "/force" : "");
        return call("DELETE", path, NULL, NULL);
    }
    bool name_cmd = !strcmp(cmd, "show");
    for (size_t i = 0; i < ARRAY_SIZE(vm_actions); i++)
        name_cmd |= !strcmp(cmd, vm_actions[i]);
    if (!name_cmd)
        return cli_usage_error("unknown command '%s'", cmd);
    if (ac != 2)
        return cli_usage_error("%s: give one NAME", cmd);
    if (strchr(av[1], '/') || strlen(av[1]) > 64)
        return cli_usage_error("'%s' is not a VM name", av[1]);
    if (!strcmp(cmd, "show")) {
        snprintf(path, sizeof(path), "/v1/vms/%s", av[1]);
        return call("GET", path, NULL, show_vm);
    }
    snprintf(path, sizeof(path), "/v1/vms/%s/%s", av[1], cmd);
    return call("POST", path, "", show_state);
}
