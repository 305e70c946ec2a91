/* wisp-oci: global options, the command table, option parsing, signal names and ids. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/io.h"
#include "common/parse.h"
#include "oci.h"
#include "wisp-config.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} commands[] = {
    {"create", cmd_create}, {"start", cmd_start},   {"state", cmd_state},
    {"list", cmd_list},     {"kill", cmd_kill},     {"delete", cmd_delete},
    {"exec", cmd_exec},     {"ps", cmd_ps},         {"pause", cmd_pause},
    {"resume", cmd_resume}, {"update", cmd_update}, {"features", cmd_features},
};

/* "--name", "-name", "--name=v", "-x" against one option; returns 1 on a match and sets *inl to
 * the inline value (after '=') or NULL. */
static int opt_match(const char *arg, const struct oci_opt *o, const char **inl)
{
    const char *p = arg;
    size_t n;

    *inl = NULL;
    if (o->short_name && arg[0] == '-' && arg[1] == o->short_name &&
        (arg[2] == 0 || arg[2] == '=')) {
        *inl = arg[2] == '=' ? arg + 3 : NULL;
        return 1;
    }
    if (*p != '-')
        return 0;
    p++;
    if (*p == '-')
        p++;
    n = strlen(o->name);
    if (strncmp(p, o->name, n) != 0 || (p[n] != 0 && p[n] != '='))
        return 0;
    *inl = p[n] == '=' ? p + n + 1 : NULL;
    return 1;
}

int oci_parse_opts(const char *cmd, int argc, char **argv, int first, const struct oci_opt *opts)
{
    int i;

    for (i = first; i < argc; i++) {
        const char *a = argv[i], *inl;
        const struct oci_opt *o;

        if (strcmp(a, "--") == 0)
            return i + 1;
        if (a[0] != '-' || a[1] == 0)
            return i;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 || strcmp(a, "-help") == 0) {
            oci_print_help(cmd);
            exit(0);
        }
        for (o = opts; o && o->name; o++)
            if (opt_match(a, o, &inl))
                break;
        if (!o || !o->name)
            return oci_usage(cmd, "flag provided but not defined: %s", a), -1;
        if (!o->has_arg) {
            if (inl && strcmp(inl, "true") != 0 && strcmp(inl, "false") != 0)
                return oci_usage(cmd, "--%s takes no value (or =true, =false)", o->name), -1;
            *o->flag = !inl || strcmp(inl, "true") == 0;
            continue;
        }
        if (!inl) {
            if (i + 1 >= argc)
                return oci_usage(cmd, "flag needs an argument: --%s", o->name), -1;
            inl = argv[++i];
        }
        *o->value = inl;
    }
    return i;
}

static const char *const signal_names[] = {
    [SIGHUP] = "HUP",   [SIGINT] = "INT",       [SIGQUIT] = "QUIT", [SIGILL] = "ILL",
    [SIGTRAP] = "TRAP", [SIGABRT] = "ABRT",     [SIGBUS] = "BUS",   [SIGFPE] = "FPE",
    [SIGKILL] = "KILL", [SIGUSR1] = "USR1",     [SIGSEGV] = "SEGV", [SIGUSR2] = "USR2",
    [SIGPIPE] = "PIPE", [SIGALRM] = "ALRM",     [SIGTERM] = "TERM", [SIGSTKFLT] = "STKFLT",
    [SIGCHLD] = "CHLD", [SIGCONT] = "CONT",     [SIGSTOP] = "STOP", [SIGTSTP] = "TSTP",
    [SIGTTIN] = "TTIN", [SIGTTOU] = "TTOU",     [SIGURG] = "URG",   [SIGXCPU] = "XCPU",
    [SIGXFSZ] = "XFSZ", [SIGVTALRM] = "VTALRM", [SIGPROF] = "PROF", [SIGWINCH] = "WINCH",
    [SIGIO] = "IO",     [SIGPWR] = "PWR",       [SIGSYS] = "SYS",
};

int oci_parse_signal(const char *s)
{
    uint64_t n;

    if (parse_u64(s, &n) == 0)
        return n >= 1 && n <= (uint64_t)SIGRTMAX ? (int)n : -1;
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    for (int i = 1; i < (int)(sizeof(signal_names) / sizeof(signal_names[0])); i++)
        if (signal_names[i] && strcasecmp(s, signal_names[i]) == 0)
            return i;
    if (strncasecmp(s, "RTMIN", 5) == 0 || strncasecmp(s, "RTMAX", 5) == 0) {
        int base = toupper((unsigned char)s[4]) == 'I' ? SIGRTMIN : SIGRTMAX;
        if (s[5] == 0)
            return base;
        if ((s[5] == '+' || s[5] == '-') && parse_u64(s + 6, &n) == 0 && n <= 32) {
            long v = s[5] == '+' ? base + (long)n : base - (long)n;
            return v >= SIGRTMIN && v <= SIGRTMAX ? (int)v : -1;
        }
    }
    return -1;
}

bool oci_valid_id(const char *id)
{
    size_t n = strlen(id);

    if (n == 0 || n > 1024 || strcmp(id, ".") == 0 || strcmp(id, "..") == 0)
        return false;
    for (const char *p = id; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '+' && *p != '-' && *p != '.')
            return false;
    return true;
}

int main(int argc, char **argv)
{
    static char self[PATH_MAX];
    const char *log_format = NULL, *rootless = NULL, *criu = NULL;
    bool version = false;
    const struct oci_opt global_opts[] = {
        {"root", 0, true, &oci_g.root, NULL},
        {"log", 0, true, &oci_g.log_path, NULL},
        {"log-format", 0, true, &log_format, NULL},
        {"debug", 0, false, NULL, &oci_g.debug},
        {"systemd-cgroup", 0, false, NULL, &oci_g.systemd_cgroup},
        {"rootless", 0, true, &rootless, NULL},
        {"criu", 0, true, &criu, NULL},
        {"version", 'v', false, NULL, &version},
        {NULL, 0, false, NULL, NULL},
    };
    ssize_t n;
    int first;

    wisp_ensure_std_fds();
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0)
        self[n] = 0;
    oci_g.self = n > 0 ? self : argv[0];

    first = oci_parse_opts(NULL, argc, argv, 1, global_opts);
    if (first < 0)
        return OCI_EXIT_USAGE;
    if (log_format) {
        if (strcmp(log_format, "json") == 0)
            oci_g.log_json = true;
        else if (strcmp(log_format, "text") != 0)
            return oci_usage(NULL, "--log-format: unknown format '%s' (text or json)", log_format);
    }
    if (rootless && strcmp(rootless, "false") != 0 && strcmp(rootless, "auto") != 0)
        return oci_usage(NULL, "--rootless %s: wisp-oci runs as root only (false or auto)",
                         rootless);
    if (version) {
        printf("wisp-oci version %s\nspec: %s\n", WISP_VERSION, OCI_SPEC_VERSION);
        return 0;
    }
    if (first >= argc) {
        oci_print_help(NULL);
        return OCI_EXIT_USAGE;
    }
    if (strcmp(argv[first], "help") == 0) {
        oci_print_help(first + 1 < argc ? argv[first + 1] : NULL);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, argv[first]) == 0)
            return commands[i].fn(argc - first, argv + first);
    return oci_usage(NULL, "no such command: '%s'", argv[first]);
}
