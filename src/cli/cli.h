/* The wisp CLI's pieces: the HTTP client for wispd's socket (client.c) and the verbs beyond
 * wisp.c's one-request ones (ops.c: logs, console, events, stats, snapshot, restore, clone,
 * run; libvirt.c: import-libvirt). docs/wisp.md documents them. */
#ifndef WISP_CLI_CLI_H
#define WISP_CLI_CLI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum {
    EXIT_REFUSED = 1,   /* wispd refused or failed the request */
    EXIT_USAGE = 2,     /* the command line is wrong */
    EXIT_NO_DAEMON = 3, /* wispd cannot be reached */
    EXIT_NO_VM = 4,     /* no VM of that name (404) */
    EXIT_CONFLICT = 5,  /* the VM's state does not allow it, or the name is taken (409) */
    EXIT_LIMIT = 6,     /* a host limit would be passed (507) */
};

extern const char *cli_sock_path;
extern bool cli_json;

/* One connection to wispd: a request sent, its answer read through a small buffer. */
struct cli_conn {
    int fd;
    char buf[16384];
    size_t len, pos;
};

/* Connects and sends the request (extra_headers: "Name: value\r\n"... or NULL). -1 (said on
 * stderr) when wispd cannot be reached. */
int cli_open(struct cli_conn *c, const char *method, const char *path, const char *body,
             const char *extra_headers, bool quiet);
/* Reads the status line and headers. -1 when the answer is not HTTP. */
int cli_read_head(struct cli_conn *c, unsigned *status, bool *chunked, long long *length);
/* Reads the body (Content-Length, chunked, or to the end) into sink; sink returning nonzero
 * stops. -1 on a broken answer. */
int cli_read_body(struct cli_conn *c, bool chunked, long long length,
                  int (*sink)(void *opaque, const char *data, size_t len), void *opaque);
void cli_close(struct cli_conn *c);
/* All of p on the socket fd (no SIGPIPE); -1 when the peer is gone. */
int cli_send_all(int fd, const char *p, size_t n);

/* One request, the whole body in *answer (malloc'd, NUL-terminated). -1: wispd unreachable
 * or the answer broken (said on stderr). */
int cli_request(const char *method, const char *path, const char *body, unsigned *status,
                char **answer);
/* The exit status for an HTTP status; prints wispd's fault_message for an error. */
int cli_exit_for(unsigned status);
int cli_print_error(unsigned status, const char *answer);
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A VM name as a path segment: refused (usage error) when it cannot be one. */
bool cli_name_ok(const char *name);

/* wisp.c: create's NAME and machine options (argv[1] NAME, then options) into a definition;
 * 0 or the usage error's exit status (said on stderr). */
int cli_build_def(int argc, char **argv, json_t **out);

/* net.c: wisp net ls|create|show|rm (argv[0] is "net"). */
int cmd_net(int argc, char **argv);

/* ops.c: each returns the exit status. argv[0] is the verb. */
int cmd_logs(int argc, char **argv);
int cmd_console(int argc, char **argv);
int cmd_events(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_clone(int argc, char **argv);
int cmd_run(int argc, char **argv);
/* libvirt.c */
int cmd_import_libvirt(int argc, char **argv);

/* Per-verb help (--help after a verb): the text, or NULL for a verb without one. */
const char *cli_verb_help(const char *verb);

#endif
