/* The wisp CLI's verbs beyond one request and one answer (cli.h; docs/wisp.md): logs and
 * console (streams and an attached terminal), events, stats, snapshot, restore, clone. */
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "libvirt_xml.h"
#include "common/cleanup.h"

#define ESCAPE_KEY 0x1d /* Ctrl-] detaches a console (telnet's, virsh's) */

/* Parses a number option, or a usage error. */
static int parse_count(const char *opt, const char *v, long long min, long long *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < min)
        return cli_usage_error("%s: '%s' is not a number (at least %lld)", opt, v, min);
    *out = n;
    return 0;
}

static int write_out(void *opaque, const char *data, size_t len)
{
    if (fwrite(data, 1, len, stdout) != len)
        return 1; /* stdout went away (| head) */
    fflush(stdout);
    return 0;
}

static int write_file(void *opaque, const char *data, size_t len)
{
    return fwrite(data, 1, len, opaque) != len;
}

/* A request whose answer is a stream: the body goes to sink as it comes. */
static int stream(const char *method, const char *path, const char *body,
                  int (*sink)(void *opaque, const char *data, size_t len), void *opaque)
{
    struct cli_conn c;
    if (cli_open(&c, method, path, body, NULL, false) < 0)
        return EXIT_NO_DAEMON;
    unsigned status;
    bool chunked;
    long long length;
    int ret = EXIT_NO_DAEMON;
    if (cli_read_head(&c, &status, &chunked, &length) == 0) {
        if (status >= 300) {
            char *answer = NULL;
            size_t alen = 0;
            FILE *m = open_memstream(&answer, &alen);
            if (m) {
                cli_read_body(&c, chunked, length, write_file, m);
                fclose(m);
            }
            ret = cli_print_error(status, answer ? answer : "");
            free(answer);
        } else if (cli_read_body(&c, chunked, length, sink, opaque) < 0) {
            fprintf(stderr, "wisp: %s: the answer ended early (wispd ended?)\n", cli_sock_path);
            ret = EXIT_REFUSED;
        } else {
            ret = 0;
        }
    }
    cli_close(&c);
    fflush(stdout);
    return ret;
}

/* ---- logs ------------------------------------------------------------------------------ */

int cmd_logs(int argc, char **argv)
{
    static const struct option opts[] = {
        {"follow", no_argument, NULL, 'f'}, {"tail", required_argument, NULL, 't'}, {0}};
    bool follow = false;
    long long tail = -1;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+ft:n:", opts, NULL)) != -1) {
        if (c == 'f')
            follow = true;
        else if ((c == 't' || c == 'n') && parse_count("--tail", optarg, 0, &tail))
            return EXIT_USAGE;
        else if (c == '?')
            return cli_usage_error("logs: unknown option or missing value '%s'", argv[optind - 1]);
    }
    if (optind != argc - 1 || !cli_name_ok(argv[optind]))
        return cli_usage_error("%s", "logs: give one NAME ([-f] [--tail N] NAME)");
    char path[256], t[40] = "";
    if (tail >= 0)
        snprintf(t, sizeof(t), "&tail=%lld", tail);
    snprintf(path, sizeof(path), "/v1/vms/%s/log?follow=%d%s", argv[optind], follow, t);
    return stream("GET", path, NULL, write_out, NULL);
}

/* ---- console --------------------------------------------------------------------------- */

static struct termios saved_tty;
static bool tty_raw;

static void restore_tty(void)
{
    if (tty_raw)
        tcsetattr(STDIN_FILENO, TCSANOW, &saved_tty);
    tty_raw = false;
}

static void on_signal(int sig)
{
    restore_tty();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Attaches to NAME's console until Ctrl-] (*detached) or the VM's end. 0, or an exit status
 * (said on stderr; 409 when it is not running: *not_running). */
static int console_session(const char *name, long long replay, bool quiet_409, bool *detached,
                           bool *not_running)
{
    char path[256], q[40] = "";
    *detached = *not_running = false;
    if (replay >= 0)
        snprintf(q, sizeof(q), "?replay=%lld", replay);
    snprintf(path, sizeof(path), "/v1/vms/%s/console%s", name, q);
    struct cli_conn conn;
    if (cli_open(&conn, "POST", path, NULL, "Connection: Upgrade\r\nUpgrade: wisp-console\r\n",
                 false) < 0)
        return EXIT_NO_DAEMON;
    unsigned status;
    bool chunked;
    long long length;
    if (cli_read_head(&conn, &status, &chunked, &length) < 0) {
        cli_close(&conn);
        return EXIT_NO_DAEMON;
    }
    if (status != 101) {
        char *answer = NULL;
        size_t alen = 0;
        FILE *m = open_memstream(&answer, &alen);
        if (m) {
            cli_read_body(&conn, chunked, length, write_file, m);
            fclose(m);
        }
        *not_running = status == 409;
        int ret = *not_running
                      ? EXIT_CONFLICT
                      : cli_print_error(status >= 300 ? status : 500, answer ? answer : "");
        if (*not_running && answer && !quiet_409)
            cli_print_error(status, answer);
        free(answer);
        cli_close(&conn);
        return ret;
    }
    bool tty = isatty(STDIN_FILENO);
    if (tty && tcgetattr(STDIN_FILENO, &saved_tty) == 0) {
        struct termios raw = saved_tty;
        cfmakeraw(&raw);
        tty_raw = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
        signal(SIGTERM, on_signal);
        signal(SIGHUP, on_signal);
        atexit(restore_tty);
    }
    fprintf(stderr, "wisp: attached to %s's console; Ctrl-] detaches%s", name,
            tty_raw ? "\r\n" : "\n");
    /* what came with the 101 is output already */
    if (conn.pos < conn.len)
        (void)!write(STDOUT_FILENO, conn.buf + conn.pos, conn.len - conn.pos);
    bool in_open = true;
    for (;;) {
        struct pollfd p[2] = {{.fd = conn.fd, .events = POLLIN},
                              {.fd = STDIN_FILENO, .events = in_open ? POLLIN : 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        char buf[4096];
        if (p[0].revents) {
            ssize_t n = read(conn.fd, buf, sizeof(buf));
            if (n <= 0)
                break; /* the VM ended, or wispd did */
            if (write(STDOUT_FILENO, buf, (size_t)n) != n)
                break;
        }
        if (p[1].revents) {
            ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
            if (n <= 0) {
                in_open = false; /* no more input; the output goes on until Ctrl-] or the end */
                continue;
            }
            char *esc = memchr(buf, ESCAPE_KEY, (size_t)n);
            size_t k = esc ? (size_t)(esc - buf) : (size_t)n;
            if (k && cli_send_all(conn.fd, buf, k) < 0)
                break;
            if (esc) {
                *detached = true;
                break;
            }
        }
    }
    restore_tty();
    cli_close(&conn);
    return 0;
}

int cmd_console(int argc, char **argv)
{
    static const struct option opts[] = {{"replay", required_argument, NULL, 'r'}, {0}};
    long long replay = -1;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
        if (c == 'r' && parse_count("--replay", optarg, 0, &replay))
            return EXIT_USAGE;
        else if (c == '?')
            return cli_usage_error("console: unknown option or missing value '%s'",
                                   argv[optind - 1]);
    }
    if (optind != argc - 1 || !cli_name_ok(argv[optind]))
        return cli_usage_error("%s", "console: give one NAME ([--replay BYTES] NAME)");
    bool detached, not_running;
    int ret = console_session(argv[optind], replay, false, &detached, &not_running);
    if (ret == 0 && detached) {
        fprintf(stderr, "\nwisp: detached\n");
    } else if (ret == 0) {
        char path[256];
        unsigned status;
        cleanup_free char *answer = NULL;
        snprintf(path, sizeof(path), "/v1/vms/%s", argv[optind]);
        struct cli_conn probe;
        bool up = cli_open(&probe, "GET", "/v1/version", NULL, NULL, true) == 0;
        if (up)
            cli_close(&probe);
        json_t *j = up && cli_request("GET", path, NULL, &status, &answer) == 0
                        ? json_loads(answer, 0, NULL)
                        : NULL;
        const char *st = json_string_value(json_object_get(j, "state"));
        fprintf(stderr, "\nwisp: the console ended: %s\n",
                !up  ? "wispd went away (the VM goes on)"
                : st ? (strcmp(st, "stopped") ? st : "the VM stopped")
                     : "the VM is gone");
        json_decref(j);
    }
    return ret;
}

/* ---- events ---------------------------------------------------------------------------- */

static long long last_event;

static void print_event(json_t *e)
{
    last_event = json_integer_value(json_object_get(e, "id"));
    if (cli_json) {
        json_dumpf(e, stdout, JSON_COMPACT);
        putchar('\n');
    } else {
        printf("%lld %-20s %-9s %s\n", last_event, json_string_value(json_object_get(e, "vm")),
               json_string_value(json_object_get(e, "kind")),
               json_string_value(json_object_get(e, "event")));
    }
}

/* JSON lines, possibly split across chunks. */
struct line_buf {
    char buf[8192];
    size_t len;
    void (*each)(json_t *j, void *opaque);
    void *opaque;
};

static int line_sink(void *opaque, const char *data, size_t len)
{
    struct line_buf *lb = opaque;
    for (size_t i = 0; i < len; i++) {
        char ch = data[i];
        if (ch != '\n') {
            if (lb->len < sizeof(lb->buf) - 1)
                lb->buf[lb->len++] = ch;
            continue;
        }
        lb->buf[lb->len] = '\0';
        lb->len = 0;
        json_t *j = json_loads(lb->buf, 0, NULL);
        if (j)
            lb->each(j, lb->opaque);
        json_decref(j);
        fflush(stdout);
    }
    return 0;
}

static void each_event(json_t *e, void *opaque)
{
    print_event(e);
}

int cmd_events(int argc, char **argv)
{
    bool follow = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--follow"))
            follow = true;
        else
            return cli_usage_error("events: unexpected argument '%s' ([-f] [--json])", argv[i]);
    }
    unsigned status;
    cleanup_free char *answer = NULL;
    if (cli_request("GET", "/v1/events", NULL, &status, &answer) < 0)
        return EXIT_NO_DAEMON;
    if (status >= 300)
        return cli_print_error(status, answer);
    json_t *a = json_loads(answer, 0, NULL), *e;
    size_t i;
    json_array_foreach(a, i, e) print_event(e);
    json_decref(a);
    fflush(stdout);
    if (!follow)
        return 0;
    char path[96];
    snprintf(path, sizeof(path), "/v1/events?follow=1&after=%lld", last_event);
    struct line_buf *lb = calloc(1, sizeof(*lb));
    if (!lb)
        return EXIT_REFUSED;
    lb->each = each_event;
    int ret = stream("GET", path, NULL, line_sink, lb);
    free(lb);
    return ret;
}

/* ---- not yet -------------------------------------------------------------------------- */

static void human(char *buf, size_t size, double v)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
}

static json_int_t get_int(json_t *o, const char *a, const char *b)
{
    return json_integer_value(json_object_get(json_object_get(o, a), b));
}

int cmd_stats(int argc, char **argv)
{
    if (argc < 2)
        return cli_usage_error("%s", "stats: give NAME...");
    json_t *all = json_array();
    int ret = 0;
    for (int i = 1; i < argc; i++) {
        if (!cli_name_ok(argv[i])) {
            json_decref(all);
            return cli_usage_error("'%s' is not a VM name", argv[i]);
        }
        char path[256];
        snprintf(path, sizeof(path), "/v1/vms/%s/stats", argv[i]);
        unsigned status;
        cleanup_free char *answer = NULL;
        if (cli_request("GET", path, NULL, &status, &answer) < 0) {
            json_decref(all);
            return EXIT_NO_DAEMON;
        }
        if (status >= 300) {
            ret = cli_print_error(status, answer);
            continue;
        }
        json_t *j = json_loads(answer, 0, NULL);
        if (j)
            json_array_append_new(all, j);
    }
    if (cli_json) {
        json_dumpf(argc == 2 && json_array_size(all) == 1 ? json_array_get(all, 0) : all, stdout,
                   JSON_INDENT(2));
        putchar('\n');
    } else if (json_array_size(all)) {
        printf("%-20s %10s %11s %21s %21s %15s\n", "NAME", "CPU", "MEMORY", "BLOCK READ/WRITTEN",
               "NET RX/TX", "BALLOON");
        size_t k;
        json_t *j;
        json_array_foreach(all, k, j)
        {
            char mem[32], br[32], bw[32], rx[32], tx[32], b2[72], n2[72], bl[40] = "-";
            human(mem, sizeof(mem), (double)get_int(j, "memory", "bytes"));
            human(br, sizeof(br), (double)get_int(j, "block", "read_bytes"));
            human(bw, sizeof(bw), (double)get_int(j, "block", "write_bytes"));
            human(rx, sizeof(rx), (double)get_int(j, "net", "rx_bytes"));
            human(tx, sizeof(tx), (double)get_int(j, "net", "tx_bytes"));
            snprintf(b2, sizeof(b2), "%s / %s", br, bw);
            snprintf(n2, sizeof(n2), "%s / %s", rx, tx);
            if (json_object_get(j, "balloon")) /* the automatic balloon: target/actual */
                snprintf(bl, sizeof(bl), "%lld/%lld MiB",
                         (long long)get_int(j, "balloon", "target_mib"),
                         (long long)get_int(j, "balloon", "actual_mib"));
            printf("%-20s %9.2fs %11s %21s %21s %15s\n",
                   json_string_value(json_object_get(j, "name")),
                   (double)get_int(j, "cpu", "usage_ns") / 1e9, mem, b2, n2, bl);
        }
    }
    json_decref(all);
    return ret;
}

/* An absolute path for wispd (which runs elsewhere): the parent made absolute. */
static char *absolute(const char *p)
{
    char *r = realpath(p, NULL);
    if (r)
        return r;
    cleanup_free char *copy = strdup(p);
    char *slash = copy ? strrchr(copy, '/') : NULL;
    const char *base = slash ? slash + 1 : p;
    if (slash)
        *slash = '\0';
    cleanup_free char *dir = realpath(slash ? (*copy ? copy : "/") : ".", NULL);
    char *out = NULL;
    if (dir && asprintf(&out, "%s/%s", strcmp(dir, "/") ? dir : "", base) < 0)
        out = NULL;
    return out;
}

static void show_snapshot(json_t *j)
{
    printf("%s: snapshot %s (memory %s, definition %s)\n",
           json_string_value(json_object_get(j, "name")),
           json_string_value(json_object_get(j, "state")),
           json_string_value(json_object_get(j, "memory")),
           json_string_value(json_object_get(j, "definition")));
}

static int one_call(const char *path, json_t *body, void (*show)(json_t *))
{
    cleanup_free char *text = json_dumps(body, 0);
    json_decref(body);
    unsigned status;
    cleanup_free char *answer = NULL;
    if (cli_request("POST", path, text, &status, &answer) < 0)
        return EXIT_NO_DAEMON;
    if (status >= 300)
        return cli_print_error(status, answer);
    json_t *j = json_loads(answer, 0, NULL);
    if (cli_json && j) {
        json_dumpf(j, stdout, JSON_INDENT(2));
        putchar('\n');
    } else if (j) {
        show(j);
    }
    json_decref(j);
    return 0;
}

/* VERB NAME PATH: POST /v1/vms/NAME/VERB {field: PATH made absolute}. */
static int path_verb(int argc, char **argv, const char *field, const char *what,
                     void (*show)(json_t *))
{
    if (argc != 3 || !cli_name_ok(argv[1]))
        return cli_usage_error("%s: give NAME and %s", argv[0], what);
    cleanup_free char *p = absolute(argv[2]);
    if (!p) {
        fprintf(stderr, "wisp: %s: %s\n", argv[2], strerror(errno));
        return EXIT_USAGE;
    }
    char path[256];
    snprintf(path, sizeof(path), "/v1/vms/%s/%s", argv[1], argv[0]);
    return one_call(path, json_pack("{s:s}", field, p), show);
}

int cmd_snapshot(int argc, char **argv)
{
    return path_verb(argc, argv, "path", "DIR or FILE", show_snapshot);
}

static void show_running(json_t *j)
{
    printf("%s: %s\n", json_string_value(json_object_get(j, "name")),
           json_string_value(json_object_get(j, "state")));
}

int cmd_restore(int argc, char **argv)
{
    return path_verb(argc, argv, "from", "FROM (a snapshot's DIR or FILE)", show_running);
}

struct clone_view {
    bool tty;
    json_t *summary;
};

static void each_clone_line(json_t *j, void *opaque)
{
    struct clone_view *v = opaque;
    if (json_is_true(json_object_get(j, "finished"))) {
        json_decref(v->summary);
        v->summary = json_incref(j);
        return;
    }
    if (!json_object_get(j, "done"))
        return; /* the snapshot line */
    const char *st = json_string_value(json_object_get(j, "state"));
    if (v->tty)
        fprintf(stderr, "\rclone: %lld/%lld",
                (long long)json_integer_value(json_object_get(j, "done")),
                (long long)json_integer_value(json_object_get(j, "total")));
    if (st && strcmp(st, "running"))
        fprintf(stderr, "%swisp: %s: %s\n", v->tty ? "\n" : "",
                json_string_value(json_object_get(j, "name")),
                json_string_value(json_object_get(j, "error")));
}

int cmd_clone(int argc, char **argv)
{
    static const struct option opts[] = {
        {"count", required_argument, NULL, 'n'}, {"prefix", required_argument, NULL, 'p'}, {0}};
    long long count = -1;
    const char *prefix = NULL;
    int c;
    optind = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:p:", opts, NULL)) != -1) {
        if (c == 'n' && parse_count("--count", optarg, 1, &count))
            return EXIT_USAGE;
        else if (c == 'p')
            prefix = optarg;
        else if (c == '?')
            return cli_usage_error("clone: unknown option or missing value '%s'", argv[optind - 1]);
    }
    if (optind != argc - 1 || !cli_name_ok(argv[optind]) || count < 1)
        return cli_usage_error("%s", "clone: give NAME --count N [--prefix P]");
    if (prefix && !cli_name_ok(prefix))
        return cli_usage_error("clone: --prefix: '%s' cannot begin a VM name", prefix);
    json_t *body = json_pack("{s:I}", "count", (json_int_t)count);
    if (prefix)
        json_object_set_new(body, "prefix", json_string(prefix));
    cleanup_free char *text = json_dumps(body, 0);
    json_decref(body);
    char path[256];
    snprintf(path, sizeof(path), "/v1/vms/%s/clone", argv[optind]);
    struct clone_view v = {.tty = isatty(STDERR_FILENO) && !cli_json};
    struct line_buf *lb = calloc(1, sizeof(*lb));
    if (!lb)
        return EXIT_REFUSED;
    lb->each = each_clone_line;
    lb->opaque = &v;
    int ret = stream("POST", path, text, line_sink, lb);
    free(lb);
    if (v.tty)
        fputc('\n', stderr);
    if (ret)
        return ret;
    if (!v.summary) {
        fprintf(stderr, "wisp: clone: the answer ended before its summary\n");
        return EXIT_REFUSED;
    }
    json_int_t failed = json_integer_value(json_object_get(v.summary, "failed"));
    const char *error = json_string_value(json_object_get(v.summary, "error"));
    if (cli_json) {
        json_dumpf(v.summary, stdout, JSON_INDENT(2));
        putchar('\n');
    } else if (error) {
        fprintf(stderr, "wisp: %s\n", error);
    } else {
        printf("%lld clones of %s running (%lld failed) in %.3f s: snapshot %.3f s, then %.1f "
               "clones/s\n",
               (long long)json_integer_value(json_object_get(v.summary, "running")),
               json_string_value(json_object_get(v.summary, "source")), (long long)failed,
               (double)json_integer_value(json_object_get(v.summary, "elapsed_ms")) / 1000,
               (double)json_integer_value(json_object_get(v.summary, "snapshot_ms")) / 1000,
               json_real_value(json_object_get(v.summary, "clones_per_s")));
    }
    ret = error || failed ? EXIT_REFUSED : 0;
    json_decref(v.summary);
    return ret;
}

/* The VM's end as an exit status: the guest's status, 128 + a signal's number. */
static int vm_exit_status(const char *name, char *last_exit, size_t size)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/vms/%s", name);
    unsigned status;
    cleanup_free char *answer = NULL;
    last_exit[0] = '\0';
    if (cli_request("GET", path, NULL, &status, &answer) < 0 || status >= 300)
        return EXIT_REFUSED;
    json_t *j = json_loads(answer, 0, NULL);
    snprintf(last_exit, size, "%s", json_string_value(json_object_get(j, "last_exit")) ?: "");
    json_decref(j);
    int n;
    if (sscanf(last_exit, "exited with status %d", &n) == 1)
        return n;
    if (sscanf(last_exit, "killed by signal %d", &n) == 1)
        return 128 + n;
    return EXIT_REFUSED;
}

/* wisp-vmm for `wisp run` without a daemon: beside wisp, in a build tree's ../vmm, or $PATH. */
static void exec_vmm(char **args)
{
    char exe[PATH_MAX], path[PATH_MAX + 32];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
        const char *rel[] = {"/wisp-vmm", "/../vmm/wisp-vmm"};
        for (unsigned i = 0; i < 2; i++) {
            snprintf(path, sizeof(path), "%s%s", exe, rel[i]);
            if (access(path, X_OK) == 0) {
                args[0] = path;
                execv(path, args);
            }
        }
    }
    args[0] = "wisp-vmm";
    execvp("wisp-vmm", args);
    fprintf(stderr, "wisp: run: cannot run wisp-vmm (beside wisp, or in PATH): %s\n",
            strerror(errno));
}

int cmd_run(int argc, char **argv)
{
    bool rm = false;
    int first = 1;
    if (first < argc && !strcmp(argv[first], "--rm")) {
        rm = true;
        first++;
    }
    char name[72];
    bool named = first < argc && argv[first][0] != '-';
    if (named)
        snprintf(name, sizeof(name), "%s", argv[first]);
    else
        snprintf(name, sizeof(name), "run-%d", (int)getpid());
    /* wisp create's argv: "create" NAME options... */
    int ac = argc - first - named + 2;
    cleanup_free char **av = calloc((size_t)ac + 1, sizeof(*av));
    if (!av)
        return EXIT_REFUSED;
    av[0] = "run";
    av[1] = name;
    for (int i = first + named; i < argc; i++)
        av[2 + i - first - named] = argv[i];
    if (!cli_name_ok(name))
        return cli_usage_error("run: '%s' is not a VM name", name);
    json_t *def;
    int ret = cli_build_def(ac, av, &def);
    if (ret)
        return ret;
    struct cli_conn probe;
    if (cli_open(&probe, "GET", "/v1/version", NULL, NULL, true) < 0) {
        /* no daemon: the same machine in the foreground, wisp-vmm's options as they are */
        json_decref(def);
        for (int i = 2; i < ac; i++)
            if (!strncmp(av[i], "--restart", 9))
                return cli_usage_error("%s", "run: --restart needs wispd (no daemon here)");
        fprintf(stderr, "wisp: no wispd at %s: running wisp-vmm in the foreground\n",
                cli_sock_path);
        cleanup_free char **vargs = calloc((size_t)ac + 1, sizeof(*vargs));
        if (!vargs)
            return EXIT_REFUSED;
        for (int i = 2; i < ac; i++)
            vargs[i - 1] = av[i];
        exec_vmm(vargs);
        return EXIT_REFUSED;
    }
    cli_close(&probe);
    cleanup_free char *text = json_dumps(def, 0);
    json_decref(def);
    unsigned status;
    char path[256], last[256];
    {
        cleanup_free char *answer = NULL;
        if (cli_request("POST", "/v1/vms", text, &status, &answer) < 0)
            return EXIT_NO_DAEMON;
        if (status >= 300)
            return cli_print_error(status, answer);
    }
    {
        cleanup_free char *answer = NULL;
        snprintf(path, sizeof(path), "/v1/vms/%s/start", name);
        if (cli_request("POST", path, "", &status, &answer) < 0)
            return EXIT_NO_DAEMON;
        if (status >= 300) {
            ret = cli_print_error(status, answer);
            if (rm) {
                cleanup_free char *a2 = NULL;
                snprintf(path, sizeof(path), "/v1/vms/%s", name);
                cli_request("DELETE", path, NULL, &status, &a2);
            }
            return ret;
        }
    }
    bool detached, not_running;
    ret = console_session(name, 1 << 30, true, &detached, &not_running);
    if (not_running) { /* it ended before the console could attach: its log is all there is */
        snprintf(path, sizeof(path), "/v1/vms/%s/log", name);
        ret = stream("GET", path, NULL, write_out, NULL);
    }
    if (ret && !not_running)
        return ret;
    if (detached) {
        fprintf(stderr, "\nwisp: detached; %s goes on (wisp console %s, wisp stop %s)\n", name,
                name, name);
        return 0;
    }
    ret = vm_exit_status(name, last, sizeof(last));
    fprintf(stderr, "wisp: %s: %s\n", name, last[0] ? last : "ended");
    if (rm) {
        cleanup_free char *answer = NULL;
        snprintf(path, sizeof(path), "/v1/vms/%s", name);
        if (cli_request("DELETE", path, NULL, &status, &answer) == 0 && status >= 300)
            cli_print_error(status, answer);
    }
    return ret;
}

int cmd_import_libvirt(int argc, char **argv)
{
    bool print = false;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--print") || !strcmp(argv[i], "-n"))
            print = true;
        else if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error("import-libvirt: unknown option '%s'", argv[i]);
        else if (file)
            return cli_usage_error("import-libvirt: unexpected argument '%s'", argv[i]);
        else
            file = argv[i];
    }
    if (!file)
        return cli_usage_error("%s", "import-libvirt: give FILE.xml ([--print] FILE.xml)");
    FILE *f = strcmp(file, "-") ? fopen(file, "re") : stdin;
    if (!f) {
        fprintf(stderr, "wisp: %s: %s\n", file, strerror(errno));
        return EXIT_USAGE;
    }
    char *xml = malloc((1 << 20) + 1);
    size_t n = xml ? fread(xml, 1, (1 << 20) + 1, f) : 0;
    if (f != stdin)
        fclose(f);
    if (!xml)
        return EXIT_REFUSED;
    char err[512];
    json_t *def = NULL, *warnings = NULL;
    int r = libvirt_to_def(xml, n, &def, &warnings, err, sizeof(err));
    free(xml);
    if (r < 0) {
        fprintf(stderr, "wisp: %s: %s\n", file, err);
        return EXIT_REFUSED;
    }
    size_t i;
    json_t *w;
    json_array_foreach(warnings, i, w)
        fprintf(stderr, "wisp: %s: warning: %s\n", file, json_string_value(w));
    json_decref(warnings);
    int ret = 0;
    if (print) {
        json_dumpf(def, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
        putchar('\n');
    } else {
        cleanup_free char *text = json_dumps(def, 0);
        unsigned status;
        cleanup_free char *answer = NULL;
        if (cli_request("POST", "/v1/vms", text, &status, &answer) < 0) {
            ret = EXIT_NO_DAEMON;
        } else if (status >= 300) {
            ret = cli_print_error(status, answer);
        } else if (cli_json) {
            fputs(answer, stdout);
            putchar('\n');
        } else {
            printf("%s: defined from %s\n", json_string_value(json_object_get(def, "name")), file);
        }
    }
    json_decref(def);
    return ret;
}

#define EXIT_TEXT                                                                                  \
    "\nExit status: 0 done; 1 refused (the message says why); 2 usage error; 3 wispd cannot be\n"  \
    "reached; 4 no VM of that name; 5 the VM's state does not allow it, or the name is taken;\n"   \
    "6 a host limit would be passed.\n"

static const struct {
    const char *verb, *text;
} verb_help[] = {
    {"define",
     "usage: wisp define FILE\n\n"
     "Defines a VM from a JSON definition (docs/wispd.md, \"Definitions\"); FILE - reads\n"
     "stdin. Prints NAME: stopped (--json: the VM).\n" EXIT_TEXT},
    {"create",
     "usage: wisp create NAME --kernel K [--initrd I] [--cmdline C] [--mem SIZE] [--cpus N]\n"
     "       [--drive path=F[,format=raw|qcow2][,readonly=on][,id=ID]]...\n"
     "       [--net network=NAME|tap=T[,mac=M][,id=ID]]... [--console serial|virtio]\n"
     "       [--restart no|on-failure|always]\n\n"
     "Defines NAME from wisp-vmm's machine options (the subset definitions have). The first\n"
     "--drive is the root disk; ids default to rootfs, driveN, netN; --mem is MiB, or with M\n"
     "or G; relative paths are made absolute. The VM is stopped until `wisp start`.\n"
     "--net network=NAME: a NIC on a wispd network (wisp net create): wispd makes its tap on\n"
     "the network's bridge while the VM runs. Every NIC without mac= gets a MAC wispd\n"
     "allocates (0a:77:69:xx:xx:xx), unique across the VMs; a given one must be free.\n" EXIT_TEXT},
    {"net",
     "usage: wisp net create NAME --subnet CIDR [--gateway IP] [--dhcp-range A-B]\n"
     "                [--nat|--no-nat] [--dns|--no-dns]\n"
     "       wisp net ls | show NAME | rm [-f|--force] NAME\n\n"
     "Networks (docs/wispd.md, \"Networks\"). create: a bridge wb-NAME holding the gateway's\n"
     "address (default the subnet's first), a dnsmasq wispd supervises for DHCP (default\n"
     "range: the other host addresses) and, with --dns, DNS (the guests' names too); --nat:\n"
     "masquerade to the host's other networks (nftables). Refused (exit 5) when the subnet\n"
     "overlaps the host's routes or addresses or another network. ls, show: subnet, bridge,\n"
     "dnsmasq, the VMs with a NIC on it. rm: refused (exit 5) while VMs have NICs on it;\n"
     "-f removes it anyway (their next start fails).\n" EXIT_TEXT},
    {"import-libvirt",
     "usage: wisp import-libvirt [--print] FILE.xml\n\n"
     "Defines a VM from a libvirt domain XML file (- for stdin): name, memory (with units),\n"
     "vcpu (cpuset), cputune vcpupin and emulatorpin (placement), os kernel, initrd and\n"
     "cmdline, disks of type file (raw or qcow2, readonly), interfaces (ethernet, bridge or\n"
     "network: the target dev is the tap; mac; model virtio), serial and console (hvc0 with\n"
     "target type virtio), on_crash restart (restart policy on-failure). Anything else is\n"
     "refused with the element named; uuid, title, description, metadata, features, clock,\n"
     "cpu, pm and controllers are ignored; what is not carried over is warned about.\n\n"
     "  --print, -n   print the wisp definition (JSON) instead of defining it (no daemon\n"
     "                needed)\n" EXIT_TEXT},
    {"ls", "usage: wisp ls [--json]\n\n"
           "The VMs, one a line: NAME, STATE (stopped, starting, running, paused, stopping),\n"
           "PID, RESTARTS, LAST EXIT. --json: an array of objects with name, state, pid,\n"
           "restarts, last_exit, api_sock and definition.\n" EXIT_TEXT},
    {"list", "usage: wisp list [--json]\n\nThe same as wisp ls.\n" EXIT_TEXT},
    {"show", "usage: wisp show [--json] NAME\n\nOne VM: its state, pid, restarts, last exit and "
             "definition.\n" EXIT_TEXT},
    {"start", "usage: wisp start NAME\n\nStarts a stopped VM; returns once wisp-vmm has taken "
              "InstanceStart\n(the guest runs). A start wisp-vmm refuses says why.\n" EXIT_TEXT},
    {"stop", "usage: wisp stop NAME\n\nCtrl-Alt-Del through the VM's API, SIGTERM after the "
             "definition's\nstop_timeout_s (at once if the machine has no keyboard), SIGKILL 3 s "
             "later;\nreturns once the process has ended.\n" EXIT_TEXT},
    {"kill", "usage: wisp kill NAME\n\nSIGKILL; returns once the process has ended.\n" EXIT_TEXT},
    {"restart",
     "usage: wisp restart NAME\n\nStop, then start; returns once it runs again.\n" EXIT_TEXT},
    {"pause", "usage: wisp pause NAME\n\nParks every vCPU (PATCH /vm Paused); returns once all "
              "are parked.\n" EXIT_TEXT},
    {"resume", "usage: wisp resume NAME\n\nLets a paused VM's vCPUs go on.\n" EXIT_TEXT},
    {"rm", "usage: wisp rm [-f] NAME\n\nRemoves a stopped VM: its definition, logs and input "
           "FIFO. -f kills a running\none first.\n" EXIT_TEXT},
    {"run",
     "usage: wisp run [--rm] [NAME] --kernel K [MACHINE OPTIONS]\n\n"
     "Creates NAME (default run-PID) with create's machine options, starts it and attaches\n"
     "its console (the whole output since the start first) until the VM ends or Ctrl-]\n"
     "detaches (the VM goes on). Without a wispd at the socket, runs wisp-vmm in the\n"
     "foreground with the same options instead (the console is the terminal; Ctrl-C ends\n"
     "it).\n\n"
     "  --rm   remove the VM when it has ended\n\n"
     "Exit status: the guest's (wisp-vmm's) status when the VM ends, 128 + N when it was\n"
     "killed by signal N; 0 after a detach; else as every command: 1 refused, 2 usage error,\n"
     "3 wispd cannot be reached, 5 the name is taken, 6 a host limit.\n"},
    {"logs",
     "usage: wisp logs [-f] [--tail N] NAME\n\n"
     "The VM's console output (COM1, or hvc0 with console virtio) since its last start: the\n"
     "scrollback that wispd keeps (the last --console-log-max bytes, default 1 MiB, at least).\n\n"
     "  -f, --follow   keep printing the output as it comes, until the VM ends\n"
     "  --tail N, -n N only the last N lines\n" EXIT_TEXT},
    {"console",
     "usage: wisp console [--replay BYTES] NAME\n\n"
     "Attaches the terminal to the running VM's console over wispd's socket: the terminal is\n"
     "put in raw mode, keys go to the guest, the output comes as the guest writes it.\n"
     "Several consoles may be attached at once. Ctrl-] (0x1d) detaches; the console also\n"
     "ends when the VM does.\n\n"
     "  --replay BYTES   scrollback printed first (default 65536; 0 none)\n" EXIT_TEXT},
    {"events",
     "usage: wisp events [-f] [--json]\n\n"
     "wispd's newest events (at most 1000): number, VM, kind (define, start, stop, crash,\n"
     "restart, pause, resume, reattach, snapshot, remove, balloon, pressure) and detail. -f then "
     "follows the\n"
     "event stream as events happen. --json: one JSON object a line (id, time_ms, vm, kind,\n"
     "event).\n" EXIT_TEXT},
    {"stats",
     "usage: wisp stats [--json] NAME...\n\n"
     "Each running VM's CPU time, memory, block bytes read and written and net bytes\n"
     "received and sent: CPU and memory from the VM's own cgroup when it has one, else from\n"
     "its process; I/O from wisp-vmm's counters; for a VM in balloon auto mode its balloon's\n"
     "target and actual size (docs/memory.md). --json: the object of GET\n"
     "/v1/vms/NAME/stats (an array for several names).\n" EXIT_TEXT},
    {"snapshot",
     "usage: wisp snapshot NAME DIR|FILE\n\n"
     "Saves a running or paused VM (a running one is paused for it and resumed). Into an\n"
     "existing directory DIR: DIR/state, DIR/memory, DIR/vm.json (the definition); else FILE,\n"
     "FILE.mem and FILE.json. --json: {name, state, memory, definition}.\n" EXIT_TEXT},
    {"restore",
     "usage: wisp restore NAME FROM\n\n"
     "Starts NAME from the snapshot FROM (a DIR or FILE of wisp snapshot): the stopped VM\n"
     "NAME, or a new VM defined from the snapshot's definition. Returns once it runs.\n" EXIT_TEXT},
    {"clone",
     "usage: wisp clone NAME --count N [--prefix P]\n\n"
     "Snapshots the running or paused VM NAME once and starts N VMs from it, P-1 ... P-N\n"
     "(P defaults to NAME), each a VM of its own (API socket, console, taps, vsock path),\n"
     "started all at once. Progress on a terminal; at the end a summary line with the rate.\n"
     "--json: the summary (total, running, failed, elapsed_ms, snapshot_ms, clones_per_s,\n"
     "clones). VMs with a writable drive are refused.\n" EXIT_TEXT},
    {"limits", "usage: wisp limits\n\nThe host limits the next VM could hit (open files, threads, "
               "pids), with what is\nin use (docs/wispd.md, \"Limits\").\n" EXIT_TEXT},
    {"reclaim",
     "usage: wisp reclaim\n\n"
     "The automatic balloon (docs/memory.md): where wispd reads the host's memory pressure\n"
     "(a PSI trigger, a PSI file, or MemAvailable), whether the host is under pressure, the\n"
     "level and thresholds, and each running VM in balloon auto mode with its target, actual\n"
     "size, floor, margin, free and available memory and last change (GET /v1/reclaim; JSON\n"
     "always).\n" EXIT_TEXT},
};

const char *cli_verb_help(const char *verb)
{
    for (size_t i = 0; i < sizeof(verb_help) / sizeof(verb_help[0]); i++)
        if (!strcmp(verb, verb_help[i].verb))
            return verb_help[i].text;
    return NULL;
}
