/* wispd's registry: the VMs it knows, in one SQLite file (docs/wispd.md, "Registry"). Every
 * change is one transaction, committed before wispd acts on it or answers, so that a kill -9
 * at any moment leaves either the old row or the new one. */
#ifndef WISP_WISPD_REGISTRY_H
#define WISP_WISPD_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct registry;

/* The schema this wispd writes; older files are migrated forward on open, newer ones are
 * refused (a downgrade would drop what it does not know). */
#define REGISTRY_SCHEMA_VERSION 2

/* One VM's row. Strings are owned by the row (registry_row_free). */
struct registry_row {
    int64_t id;
    char *name;
    char *definition; /* JSON text, as accepted by vmdef_parse() */
    char *state;      /* "stopped", "starting", "running", "paused", "stopping" */
    char *restart_policy;
    int64_t pid;        /* 0: none */
    uint64_t starttime; /* /proc/PID/stat field 22 of pid, to know it is still that process */
    char *api_sock;
    bool remove_pending; /* rm -f of a running VM: the row goes when the process has gone */
    int64_t restarts;
    char *last_exit;
    int64_t created_ms;
};

/* Opens (creating) DIR/wispd.db: WAL, synchronous=NORMAL (a commit survives a crash of wispd;
 * a thread of its own checkpoints, fsyncing, within 1 s of a commit: docs/wispd.md,
 * "Durability"), foreign keys, the schema migrated. */
int registry_open(struct registry **out, const char *dir, struct wisp_err *err);
void registry_close(struct registry *r);

/* -EEXIST (err says so) when the name is taken. */
int registry_define(struct registry *r, const char *name, const char *definition,
                    const char *restart_policy, int64_t *id_out, struct wisp_err *err);
/* Sets state, pid, starttime and api_sock in one transaction. */
int registry_set_state(struct registry *r, int64_t id, const char *state, int64_t pid,
                       uint64_t starttime, const char *api_sock, struct wisp_err *err);
int registry_set_exit(struct registry *r, int64_t id, const char *last_exit, int64_t restarts,
                      struct wisp_err *err);
int registry_set_remove_pending(struct registry *r, int64_t id, struct wisp_err *err);
int registry_remove(struct registry *r, int64_t id, struct wisp_err *err);

/* Calls fn for every row in id order (at start-up only). */
int registry_for_each(struct registry *r, int (*fn)(const struct registry_row *row, void *opaque),
                      void *opaque, struct wisp_err *err);

/* Appends an event; *id_out its number (increasing). Events are kept for the newest 10000. */
int registry_add_event(struct registry *r, const char *vm_name, const char *kind,
                       const char *detail, int64_t *id_out, struct wisp_err *err);
/* Calls fn for the events after `after`, oldest first, at most `max`. */
int registry_for_each_event(struct registry *r, int64_t after, unsigned max,
                            int (*fn)(int64_t id, int64_t time_ms, const char *vm, const char *kind,
                                      const char *detail, void *opaque),
                            void *opaque, struct wisp_err *err);

/* The newest event's number (0: none). */
int64_t registry_last_event(struct registry *r);

int64_t registry_now_ms(void);

/* Networks (network.c): one row each; -EEXIST (err says so) when the name is taken. */
struct registry_net_row {
    int64_t id;
    const char *name, *definition; /* valid during the callback */
    bool remove_pending;           /* net rm under way: finished by the next wispd */
    int64_t dnsmasq_pid;           /* 0: none */
    uint64_t dnsmasq_starttime;
};
int registry_net_define(struct registry *r, const char *name, const char *definition,
                        int64_t *id_out, struct wisp_err *err);
int registry_net_set_dnsmasq(struct registry *r, int64_t id, int64_t pid, uint64_t starttime,
                             struct wisp_err *err);
int registry_net_set_remove_pending(struct registry *r, int64_t id, struct wisp_err *err);
int registry_net_remove(struct registry *r, int64_t id, struct wisp_err *err);
int registry_net_for_each(struct registry *r,
                          int (*fn)(const struct registry_net_row *row, void *opaque), void *opaque,
                          struct wisp_err *err);

#endif
