/* wisp-oci: the runc-compatible runtime (docs/oci.md). Shared declarations of its commands. */
#ifndef WISP_OCI_OCI_H
#define WISP_OCI_OCI_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/err.h"

#define OCI_SPEC_VERSION  "1.0.2-dev"
#define OCI_DEFAULT_ROOT  "/run/wisp-oci"
#define OCI_EXIT_FAIL     1   /* runc's status for every failed command */
#define OCI_EXIT_USAGE    2   /* wisp's status for a usage error (runc uses 1) */
#define OCI_EXIT_EXEC_ERR 255 /* runc exec's status when the process could not be run */

/* The global options, as runc's (go-runc's Runc.args()). */
struct oci_global {
    const char *root;     /* --root: the state directories' parent */
    const char *log_path; /* --log: NULL = stderr */
    bool log_json;        /* --log-format json */
    bool debug;           /* --debug */
    bool systemd_cgroup;  /* --systemd-cgroup (refused by create) */
    const char *self;     /* /proc/self/exe, resolved */
};

extern struct oci_global oci_g;

/* log.c: runc's logging. oci_logf writes one line to --log (JSON or logrus text) or stderr. */
void oci_logf(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs the error and, when --log is not stderr, prints it on stderr too (runc's fatal());
 * returns status for `return oci_fail(1, ...)`. */
int oci_fail(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int oci_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void oci_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* now as RFC 3339 with nanoseconds, UTC ("2026-12-02T00:38:13.675410927Z"). */
void oci_time_now(char *buf, size_t len);

/* Command-line options of one command: a tiny parser with runc's (Go flag) forms: --name V,
 * --name=V, -name V, and short -x. Parsing stops at the first operand. */
struct oci_opt {
    const char *name; /* long name without dashes */
    char short_name;  /* 0 when none */
    bool has_arg;
    const char **value; /* has_arg: where the value goes */
    bool *flag;         /* !has_arg: set to true */
};
/* Returns the index of the first operand, or -1 after printing a usage error. */
int oci_parse_opts(const char *cmd, int argc, char **argv, int first, const struct oci_opt *opts);

/* The commands (cmd_*.c): argv[0] is the command's name. Each returns the exit status. */
int cmd_create(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_state(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_kill(int argc, char **argv);
int cmd_delete(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_ps(int argc, char **argv);
int cmd_pause(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_update(int argc, char **argv);
int cmd_features(int argc, char **argv);

/* Opens ID or prints runc's "container does not exist" (returns non-zero then). */
struct oci_container;
int oci_open_or_fail(const char *id, struct oci_container *c);

/* help.c */
void oci_print_help(const char *cmd);

/* Signals by name (KILL, SIGKILL) or number; -1 when unknown. */
int oci_parse_signal(const char *s);

/* The container id rule (runc's): ^[\w+.-]+$, not "." or "..". */
bool oci_valid_id(const char *id);

#endif
