/* wisp-agentctl: the guest agent's host CLI, for tests and debugging (libwisp_agent). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/agentctl.h"
#include "wisp-config.h"

static const char usage_text[] =
    "Usage: wisp-agentctl --vsock UDS [--timeout SECONDS] [--json] COMMAND [OPTIONS] [-- ARGS]\n"
    "\n"
    "Talks to the wisp guest agent (docs/agent-protocol.md) of a VM through the VM's vsock\n"
    "unix socket UDS (wisp-vmm --vsock cid=N,uds=UDS): CONNECT 1024, HELLO, then one command.\n"
    "Every wait is bounded by --timeout (default 30 s; 0 = none): while the guest boots, the\n"
    "connection is retried until then.\n"
    "\n"
    "Commands:\n"
    "  hello                          print the agent's name and protocol version\n"
    "  container-create ID ROOT-OPTIONS [--hostname NAME] [--mount TYPE:SOURCE:/DEST[:OPTS]]...\n"
    "                                 [--file /DEST=HOSTFILE]... [--default-devices]\n"
    "                                 ROOT-OPTIONS: --rootfs-tag TAG (virtio-9p) or --rootfs-path\n"
    "                                 DIR (a guest directory), [--readonly]\n"
    "  create ID [--exec-id E] PROCESS-OPTIONS -- ARGS...\n"
    "                                 create a process (set up, not started); prints its pid\n"
    "  start ID [--exec-id E]         run the created process's program\n"
    "  run ID [--exec-id E] PROCESS-OPTIONS -- ARGS...\n"
    "                                 create, attach stdout/stderr (and stdin with --stdin, or\n"
    "                                 the terminal with -t), start, copy the streams to this\n"
    "                                 program's own and wait; exits with the process's status\n"
    "  kill ID [--exec-id E] [--all] SIGNAL   (a number or a name: TERM, SIGKILL, ...)\n"
    "  wait ID [--exec-id E]          print \"exited N\" or \"signaled N\"; exit with the status\n"
    "  resize ID [--exec-id E] ROWS COLS\n"
    "  ps ID                          the container's processes: PID PPID UID STATE EXEC-ID CMD\n"
    "  network [--up IF] [--mtu IF=N] [--addr IF=ADDR/PREFIX]... [--route DEST/PREFIX[,via=GW]\n"
    "          [,dev=IF]]... [--resolv-conf HOSTFILE]\n"
    "  delete ID [--exec-id E]        forget an ended process (with --exec-id), else end and\n"
    "                                 remove the whole container\n"
    "  shutdown [--grace MS]          end the containers (SIGTERM, SIGKILL after MS, default\n"
    "                                 2000) and the VM\n"
    "\n"
    "PROCESS-OPTIONS: --env NAME=VALUE... --cwd DIR --uid N --gid N --groups G,G... --umask OCT\n"
    "  --rlimit NAME=SOFT[:HARD]... (NOFILE=1024:4096, unlimited) --no-new-privileges\n"
    "  -t/--tty [--size ROWSxCOLS] --stdin (run: this program's stdin goes to the process)\n"
    "The exec id \"\" (the default) is the container's own process; others are exec'd ones.\n"
    "\n"
    "  --json      hello, create, wait and ps print one JSON object instead of text\n"
    "  -h, --help  this text;  --version  the version\n"
    "\n"
    "Exit status: 0 success, 1 failure (the agent's or the connection's error is printed),\n"
    "2 usage error; run and wait: the process's exit code, or 128 + its signal.\n"
    "\n"
    "Example:\n"
    "  wisp-agentctl --vsock /run/vm.sock container-create c1 --rootfs-path /rootfs \\\n"
    "      --mount proc:proc:/proc\n"
    "  wisp-agentctl --vsock /run/vm.sock run c1 --env PATH=/bin -- sh -c 'echo hi'\n";

struct ctl {
    const char *uds;
    int64_t timeout_ms;
    bool json;
};

static int fail(const struct wisp_err *err)
{
    fprintf(stderr, "wisp-agentctl: %s\n", err->msg);
    return 1;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "wisp-agentctl: %s (see --help)\n", msg);
    return 2;
}

static int64_t deadline(const struct ctl *c)
{
    return c->timeout_ms ? wisp_agent_deadline(c->timeout_ms) : WISP_AGENT_NO_DEADLINE;
}

static int parse_signal(const char *s)
{
    static const struct {
        const char *name;
        int sig;
    } names[] = {{"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
                 {"USR1", SIGUSR1}, {"USR2", SIGUSR2},   {"TERM", SIGTERM}, {"CONT", SIGCONT},
                 {"STOP", SIGSTOP}, {"WINCH", SIGWINCH}, {"ALRM", SIGALRM}};
    char *end;
    long v = strtol(s, &end, 10);

    if (*s && !*end)
        return v > 0 && v <= 64 ? (int)v : -1;
    if (strncmp(s, "SIG", 3) == 0)
        s += 3;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i].name) == 0)
            return names[i].sig;
    return -1;
}

static int shell_status(int st)
{
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void print_status(const struct ctl *c, int st)
{
    if (c->json)
        printf("{\"exited\": %s, \"code\": %d}\n", WIFEXITED(st) ? "true" : "false",
               WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    else if (WIFEXITED(st))
        printf("exited %d\n", WEXITSTATUS(st));
    else
        printf("signaled %d\n", WTERMSIG(st));
}

static void json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static int cmd_ps(const struct ctl *c, struct wisp_agent *a, const char *id)
{
    struct wisp_agent_ps_entry *e;
    struct wisp_err err = {0};
    size_t n;

    if (wisp_agent_ps(a, id, &e, &n, deadline(c), &err) < 0)
        return fail(&err);
    if (c->json)
        printf("{\"processes\": [");
    for (size_t i = 0; i < n; i++) {
        if (c->json) {
            printf("%s{\"pid\": %u, \"ppid\": %u, \"uid\": %u, \"state\": ", i ? ", " : "",
                   e[i].pid, e[i].ppid, e[i].uid);
            json_str(e[i].state);
            printf(", \"exec_id\": ");
            if (e[i].exec_id)
                json_str(e[i].exec_id);
            else
                printf("null");
            printf(", \"cmd\": ");
            json_str(e[i].cmd);
            printf("}");
        } else {
            printf("%u %u %u %s %s %s\n", e[i].pid, e[i].ppid, e[i].uid, e[i].state,
                   e[i].exec_id ? (e[i].exec_id[0] ? e[i].exec_id : "(init)") : "-", e[i].cmd);
        }
    }
    if (c->json)
        printf("]}\n");
    free(e);
    return 0;
}

/* run: create, attach, start, pump, wait. */
static int cmd_run(const struct ctl *c, struct wisp_agent *a, const char *id, struct ctl_spec *s)
{
    struct wisp_agent_stdio_pump io = {.in_fd = -1,
                                       .out_fd = 1,
                                       .err_fd = 2,
                                       .stdin_conn = -1,
                                       .stdout_conn = -1,
                                       .stderr_conn = -1};
    struct wisp_err err = {0};
    int64_t dl = WISP_AGENT_NO_DEADLINE;
    uint32_t pid;
    int st = 0;

    s->proc.stdio[0] = s->forward_stdin ? WISP_AGENT_STDIO_PIPE : WISP_AGENT_STDIO_NULL;
    s->proc.stdio[1] = s->proc.stdio[2] = WISP_AGENT_STDIO_PIPE;
    if (wisp_agent_process_create(a, id, s->exec_id, &s->proc, &pid, deadline(c), &err) < 0)
        return fail(&err);
    if (s->proc.terminal) {
        if (wisp_agent_attach(c->uds, id, s->exec_id, WISP_AGENT_STREAM_PTY, deadline(c),
                              &io.stdin_conn, &err) < 0)
            return fail(&err);
        io.stdout_conn = io.stdin_conn;
        io.in_fd = 0;
    } else {
        if (wisp_agent_attach(c->uds, id, s->exec_id, WISP_AGENT_STREAM_STDOUT, deadline(c),
                              &io.stdout_conn, &err) < 0 ||
            wisp_agent_attach(c->uds, id, s->exec_id, WISP_AGENT_STREAM_STDERR, deadline(c),
                              &io.stderr_conn, &err) < 0 ||
            (s->forward_stdin && wisp_agent_attach(c->uds, id, s->exec_id, WISP_AGENT_STREAM_STDIN,
                                                   deadline(c), &io.stdin_conn, &err) < 0))
            return fail(&err);
        io.in_fd = s->forward_stdin ? 0 : -1;
    }
    if (wisp_agent_process_start(a, id, s->exec_id, deadline(c), &err) < 0)
        return fail(&err);
    if (wisp_agent_pump_and_wait(a, id, s->exec_id, &io, &st, dl, &err) < 0)
        return fail(&err);
    return shell_status(st);
}

static int run_command(const struct ctl *c, const char *cmd, int argc, char **argv)
{
    struct ctl_spec *s = calloc(1, sizeof(*s));
    struct wisp_agent *a = NULL;
    struct wisp_err err = {0};
    const char *id = NULL;
    int next, r = 0, st, sig;
    uint32_t pid;

    if (!s)
        return 1;
    if (strcmp(cmd, "hello") && strcmp(cmd, "network") && strcmp(cmd, "shutdown")) {
        if (argc < 2 || argv[1][0] == '-') {
            free(s);
            return usage_error("the command needs a container ID first");
        }
        id = argv[1];
        argv++; /* getopt skips argv[0]: now the ID */
        argc--;
    }
    if (ctl_parse(cmd, argc, argv, s, &next) < 0) {
        ctl_spec_free(s);
        free(s);
        return 2;
    }
    argv += next;
    argc -= next;
    if (wisp_agent_connect(c->uds, deadline(c), &a, &err) < 0) {
        r = fail(&err);
        goto out;
    }
    s->ctr.id = id;
    s->proc.args = (const char **)argv;
    s->proc.nargs = (size_t)argc;
    if (strcmp(cmd, "hello") == 0) {
        if (c->json)
            printf("{\"name\": \"%s\", \"version\": %u}\n", wisp_agent_name(a),
                   wisp_agent_version(a));
        else
            printf("%s, protocol %u\n", wisp_agent_name(a), wisp_agent_version(a));
    } else if (strcmp(cmd, "container-create") == 0) {
        r = wisp_agent_container_create(a, &s->ctr, deadline(c), &err);
    } else if (strcmp(cmd, "create") == 0) {
        s->proc.stdio[0] = s->proc.stdio[1] = s->proc.stdio[2] = WISP_AGENT_STDIO_PIPE;
        r = wisp_agent_process_create(a, id, s->exec_id, &s->proc, &pid, deadline(c), &err);
        if (r == 0)
            printf(c->json ? "{\"pid\": %u}\n" : "%u\n", pid);
    } else if (strcmp(cmd, "start") == 0) {
        r = wisp_agent_process_start(a, id, s->exec_id, deadline(c), &err);
    } else if (strcmp(cmd, "run") == 0) {
        r = argc < 1 ? usage_error("run needs -- ARGS") : cmd_run(c, a, id, s);
        goto out;
    } else if (strcmp(cmd, "kill") == 0) {
        if (argc != 1 || (sig = parse_signal(argv[0])) < 0) {
            r = usage_error("kill wants one SIGNAL (TERM, 9, ...)");
            goto out;
        }
        r = wisp_agent_signal(a, id, s->exec_id, sig, s->all, deadline(c), &err);
    } else if (strcmp(cmd, "wait") == 0) {
        r = wisp_agent_wait(a, id, s->exec_id, &st, deadline(c), &err);
        if (r == 0) {
            print_status(c, st);
            r = shell_status(st);
            goto out;
        }
    } else if (strcmp(cmd, "resize") == 0) {
        if (argc != 2 || atoi(argv[0]) <= 0 || atoi(argv[1]) <= 0 || atoi(argv[0]) > 65535 ||
            atoi(argv[1]) > 65535) {
            r = usage_error("resize wants ROWS COLS");
            goto out;
        }
        r = wisp_agent_resize(a, id, s->exec_id, (uint16_t)atoi(argv[0]), (uint16_t)atoi(argv[1]),
                              deadline(c), &err);
    } else if (strcmp(cmd, "ps") == 0) {
        r = cmd_ps(c, a, id);
        goto out;
    } else if (strcmp(cmd, "network") == 0) {
        r = wisp_agent_network(a, &s->net, deadline(c), &err);
    } else if (strcmp(cmd, "delete") == 0) {
        r = s->exec_id[0] ? wisp_agent_process_delete(a, id, s->exec_id, deadline(c), &err)
                          : wisp_agent_container_delete(a, id, deadline(c), &err);
    } else if (strcmp(cmd, "shutdown") == 0) {
        r = wisp_agent_shutdown(a, s->grace_ms, deadline(c), &err);
    } else {
        r = usage_error("unknown command");
        goto out;
    }
    if (r < 0)
        r = fail(&err);
out:
    wisp_agent_close(a);
    ctl_spec_free(s);
    free(s);
    return r;
}

int main(int argc, char **argv)
{
    struct ctl c = {.timeout_ms = 30000};
    int i;

    signal(SIGPIPE, SIG_IGN);
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(usage_text, stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("wisp-agentctl %s (protocol %u)\n", WISP_VERSION, WISP_AGENT_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--json") == 0) {
            c.json = true;
        } else if (strcmp(argv[i], "--vsock") == 0 && i + 1 < argc) {
            c.uds = argv[++i];
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            char *end;
            double t = strtod(argv[++i], &end);

            if (*end || t < 0 || t > 1e6)
                return usage_error("--timeout wants seconds");
            c.timeout_ms = (int64_t)(t * 1000);
        } else {
            return usage_error("unknown option before the command");
        }
    }
    if (!c.uds)
        return usage_error("--vsock UDS is required");
    if (i >= argc)
        return usage_error("no command");
    /* the command's own options and arguments: argv[i] is the command (getopt's argv[0]) */
    return run_command(&c, argv[i], argc - i, argv + i);
}
