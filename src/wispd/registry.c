/* wispd's registry in SQLite (registry.h; docs/wispd.md, "Registry"). */
#include "registry.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cleanup.h"

/* Checkpoints: at most this long after a commit, the WAL is fsynced and copied into the
 * database file (docs/wispd.md, "Durability"). */
#define CHECKPOINT_INTERVAL_MS 1000

struct registry {
    sqlite3 *db;
    char *path;
    int64_t events_since_trim;
    /* The checkpointer: its own connection on its own thread, so that no fsync runs on
     * wispd's loop. `dirty` counts commits since its last pass; `stop` ends it. */
    pthread_t ckpt_thread;
    bool ckpt_running, stop;
    uint64_t dirty, checkpoints;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    sqlite3 *ckpt_db;
};

/* Each migration takes the schema from version i to i + 1; a new column or table is a new
 * entry at the end, never an edit of an old one (a file in the field has run the old ones). */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE vms ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  definition TEXT NOT NULL,"
    "  restart_policy TEXT NOT NULL DEFAULT 'no'"
    "    CHECK (restart_policy IN ('no', 'on-failure', 'always')),"
    "  state TEXT NOT NULL DEFAULT 'stopped'"
    "    CHECK (state IN ('stopped', 'starting', 'running', 'paused', 'stopping')),"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  starttime INTEGER NOT NULL DEFAULT 0,"
    "  api_sock TEXT NOT NULL DEFAULT '',"
    "  remove_pending INTEGER NOT NULL DEFAULT 0,"
    "  restarts INTEGER NOT NULL DEFAULT 0,"
    "  last_exit TEXT NOT NULL DEFAULT '',"
    "  created_ms INTEGER NOT NULL);"
    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  vm_id INTEGER REFERENCES vms(id) ON DELETE SET NULL,"
    "  vm_name TEXT NOT NULL,"
    "  time_ms INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  detail TEXT NOT NULL DEFAULT '');",
    /* 1 -> 2: networks (network.c); dnsmasq_*: its process, as vms.pid and vms.starttime */
    "CREATE TABLE networks ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  definition TEXT NOT NULL,"
    "  remove_pending INTEGER NOT NULL DEFAULT 0,"
    "  dnsmasq_pid INTEGER NOT NULL DEFAULT 0,"
    "  dnsmasq_starttime INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL);",
};

int64_t registry_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int db_error(struct registry *r, struct wisp_err *err, const char *what)
{
    int code = sqlite3_extended_errcode(r->db);
    int e = (code & 0xff) == SQLITE_CONSTRAINT ? EEXIST
            : (code & 0xff) == SQLITE_FULL     ? ENOSPC
            : (code & 0xff) == SQLITE_BUSY     ? EBUSY
                                               : EIO;
    return wisp_err_set(err, e, "%s: %s: %s", r->path, what, sqlite3_errmsg(r->db));
}

static int exec(struct registry *r, const char *sql, struct wisp_err *err)
{
    if (sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(r, err, sql);
    return 0;
}

static int schema_version(struct registry *r, int64_t *out, struct wisp_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->db, "SELECT version FROM schema_version", -1, &st, NULL) != SQLITE_OK)
        return db_error(r, err, "reading the schema version");
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_error(r, err, "schema_version");
}

static int migrate(struct registry *r, struct wisp_err *err)
{
    int ret = exec(r,
                   "BEGIN IMMEDIATE; CREATE TABLE IF NOT EXISTS schema_version "
                   "(version INTEGER NOT NULL)",
                   err);
    if (ret < 0)
        return ret;
    int64_t v;
    ret = schema_version(r, &v, err);
    if (ret == 0 && v > (int64_t)ARRAY_SIZE(migrations))
        ret = wisp_err_set(err, EPROTO,
                           "%s: schema version %lld is newer than this wispd's (%zu): refusing "
                           "to open it",
                           r->path, (long long)v, ARRAY_SIZE(migrations));
    for (int64_t i = v; ret == 0 && i < (int64_t)ARRAY_SIZE(migrations); i++)
        ret = exec(r, migrations[i], err);
    if (ret == 0 && v < (int64_t)ARRAY_SIZE(migrations)) {
        char sql[128];
        snprintf(sql, sizeof(sql),
                 "DELETE FROM schema_version; INSERT INTO schema_version "
                 "VALUES (%zu)",
                 ARRAY_SIZE(migrations));
        ret = exec(r, sql, err);
    }
    if (ret < 0) {
        sqlite3_exec(r->db, "ROLLBACK", NULL, NULL, NULL);
        return ret;
    }
    return exec(r, "COMMIT", err);
}

/* The checkpointer's loop: a PASSIVE checkpoint (the WAL fsynced, its pages copied into the
 * database file, that fsynced: it never blocks the loop's writers or readers) once a commit
 * waited CHECKPOINT_INTERVAL_MS, and a last one at the end. */
static void *checkpointer(void *opaque)
{
    struct registry *r = opaque;
    pthread_mutex_lock(&r->lock);
    for (;;) {
        while (!r->dirty && !r->stop)
            pthread_cond_wait(&r->wake, &r->lock);
        if (!r->stop) { /* let commits gather: one fsync for all of them */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (CHECKPOINT_INTERVAL_MS % 1000) * 1000000L;
            ts.tv_sec += CHECKPOINT_INTERVAL_MS / 1000 + ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            while (!r->stop && pthread_cond_timedwait(&r->wake, &r->lock, &ts) != ETIMEDOUT) {
            }
        }
        bool stop = r->stop, dirty = r->dirty != 0;
        r->dirty = 0;
        pthread_mutex_unlock(&r->lock);
        if (dirty) {
            int rc =
                sqlite3_wal_checkpoint_v2(r->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            if (rc != SQLITE_OK && rc != SQLITE_BUSY)
                fprintf(stderr, "wispd: %s: checkpoint: %s\n", r->path, sqlite3_errmsg(r->ckpt_db));
        }
        pthread_mutex_lock(&r->lock);
        r->checkpoints++;
        if (stop)
            break;
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

/* A commit happened: the checkpointer makes it durable against a power cut within
 * CHECKPOINT_INTERVAL_MS (plus the fsyncs' time). */
static void committed(struct registry *r)
{
    if (!r->ckpt_running)
        return;
    pthread_mutex_lock(&r->lock);
    if (!r->dirty++)
        pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->lock);
}

static int start_checkpointer(struct registry *r, struct wisp_err *err)
{
    if (sqlite3_open_v2(r->path, &r->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(r->ckpt_db, "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 1000", NULL,
                     NULL, NULL) != SQLITE_OK)
        return wisp_err_set(err, EIO, "%s: the checkpointer's connection: %s", r->path,
                            sqlite3_errmsg(r->ckpt_db));
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->wake, NULL);
    sigset_t all, old;
    sigfillset(&all); /* the signals stay wispd's main thread's (its signalfd) */
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&r->ckpt_thread, NULL, checkpointer, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e)
        return wisp_err_sys(err, e, "%s: the checkpointer's thread", r->path);
    r->ckpt_running = true;
    return 0;
}

int registry_open(struct registry **out, const char *dir, struct wisp_err *err)
{
    struct registry *r = calloc(1, sizeof(*r));
    if (!r || asprintf(&r->path, "%s/wispd.db", dir) < 0) {
        free(r);
        return wisp_err_set(err, ENOMEM, "registry: out of memory");
    }
    int ret = 0;
    if (sqlite3_open_v2(r->path, &r->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK)
        ret = db_error(r, err, "opening");
    /* WAL with synchronous = NORMAL: a commit is one write() appending to the log, with no
     * fsync, so it is in the kernel's page cache when wispd answers: it survives any crash or
     * kill -9 of wispd. The log is fsynced by the checkpointer (its own thread and connection,
     * never wispd's loop; automatic checkpoints on the loop are off), at most
     * CHECKPOINT_INTERVAL_MS after a commit: a power cut or kernel crash loses at most the
     * commits of that last interval, never the file's consistency. */
    if (ret == 0)
        ret = exec(r,
                   "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                   "PRAGMA wal_autocheckpoint = 0; PRAGMA foreign_keys = ON; "
                   "PRAGMA busy_timeout = 1000",
                   err);
    if (ret == 0)
        ret = migrate(r, err);
    if (ret == 0)
        ret = start_checkpointer(r, err);
    if (ret < 0) {
        registry_close(r);
        return ret;
    }
    *out = r;
    return 0;
}

void registry_close(struct registry *r)
{
    if (!r)
        return;
    if (r->ckpt_running) {
        pthread_mutex_lock(&r->lock);
        r->stop = true;
        pthread_cond_signal(&r->wake);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->ckpt_thread, NULL);
    }
    sqlite3_close(r->ckpt_db);
    sqlite3_close(r->db); /* the last connection: a final checkpoint, the WAL removed */
    free(r->path);
    free(r);
}

/* Prepares sql, binds the arguments ('i' int64, 't' text, 'u' uint64 as int64), steps once. */
static void committed(struct registry *r);

static int run(struct registry *r, struct wisp_err *err, const char *what, const char *sql,
               const char *types, ...)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_error(r, err, what);
    va_list ap;
    va_start(ap, types);
    for (int i = 0; types[i]; i++) {
        if (types[i] == 't')
            sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_TRANSIENT);
        else if (types[i] == 'u')
            sqlite3_bind_int64(st, i + 1, (int64_t)va_arg(ap, uint64_t));
        else
            sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
    }
    va_end(ap);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_error(r, err, what);
    committed(r);
    return 0;
}

int registry_define(struct registry *r, const char *name, const char *definition,
                    const char *restart_policy, int64_t *id_out, struct wisp_err *err)
{
    int ret = run(r, err, "define",
                  "INSERT INTO vms (name, definition, restart_policy, created_ms) "
                  "VALUES (?, ?, ?, ?)",
                  "ttti", name, definition, restart_policy, registry_now_ms());
    if (ret == -EEXIST)
        return wisp_err_set(err, EEXIST, "a VM named '%s' exists", name);
    if (ret == 0)
        *id_out = sqlite3_last_insert_rowid(r->db);
    return ret;
}

int registry_set_state(struct registry *r, int64_t id, const char *state, int64_t pid,
                       uint64_t starttime, const char *api_sock, struct wisp_err *err)
{
    return run(r, err, "state",
               "UPDATE vms SET state = ?, pid = ?, starttime = ?, api_sock = ? "
               "WHERE id = ?",
               "tiuti", state, pid, starttime, api_sock ? api_sock : "", id);
}

int registry_set_exit(struct registry *r, int64_t id, const char *last_exit, int64_t restarts,
                      struct wisp_err *err)
{
    return run(r, err, "exit", "UPDATE vms SET last_exit = ?, restarts = ? WHERE id = ?", "tii",
               last_exit, restarts, id);
}

int registry_set_remove_pending(struct registry *r, int64_t id, struct wisp_err *err)
{
    return run(r, err, "rm", "UPDATE vms SET remove_pending = 1 WHERE id = ?", "i", id);
}

int registry_remove(struct registry *r, int64_t id, struct wisp_err *err)
{
    return run(r, err, "rm", "DELETE FROM vms WHERE id = ?", "i", id);
}

static char *column_dup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

int registry_for_each(struct registry *r, int (*fn)(const struct registry_row *row, void *opaque),
                      void *opaque, struct wisp_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT id, name, definition, state, restart_policy, pid, starttime, "
                           "api_sock, remove_pending, restarts, last_exit, created_ms FROM vms "
                           "ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_error(r, err, "listing");
    int ret = 0, rc;
    while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct registry_row row = {
            .id = sqlite3_column_int64(st, 0),
            .name = column_dup(st, 1),
            .definition = column_dup(st, 2),
            .state = column_dup(st, 3),
            .restart_policy = column_dup(st, 4),
            .pid = sqlite3_column_int64(st, 5),
            .starttime = (uint64_t)sqlite3_column_int64(st, 6),
            .api_sock = column_dup(st, 7),
            .remove_pending = sqlite3_column_int64(st, 8) != 0,
            .restarts = sqlite3_column_int64(st, 9),
            .last_exit = column_dup(st, 10),
            .created_ms = sqlite3_column_int64(st, 11),
        };
        if (!row.name || !row.definition || !row.state || !row.restart_policy || !row.api_sock ||
            !row.last_exit)
            ret = wisp_err_set(err, ENOMEM, "registry: out of memory");
        else
            ret = fn(&row, opaque);
        free(row.name);
        free(row.definition);
        free(row.state);
        free(row.restart_policy);
        free(row.api_sock);
        free(row.last_exit);
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = db_error(r, err, "listing");
    sqlite3_finalize(st);
    return ret;
}

int registry_add_event(struct registry *r, const char *vm_name, const char *kind,
                       const char *detail, int64_t *id_out, struct wisp_err *err)
{
    int ret = run(r, err, "event",
                  "INSERT INTO events (vm_id, vm_name, time_ms, kind, detail) VALUES "
                  "((SELECT id FROM vms WHERE name = ?), ?, ?, ?, ?)",
                  "ttitt", vm_name, vm_name, registry_now_ms(), kind, detail ? detail : "");
    if (ret < 0)
        return ret;
    *id_out = sqlite3_last_insert_rowid(r->db);
    /* Trimmed once per 1000 events, so an event costs the same whatever the history. */
    if (++r->events_since_trim >= 1000) {
        r->events_since_trim = 0;
        ret = run(r, err, "trimming events", "DELETE FROM events WHERE id <= ?", "i",
                  *id_out - 10000);
    }
    return ret;
}

int registry_for_each_event(struct registry *r, int64_t after, unsigned max,
                            int (*fn)(int64_t id, int64_t time_ms, const char *vm, const char *kind,
                                      const char *detail, void *opaque),
                            void *opaque, struct wisp_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT id, time_ms, vm_name, kind, detail FROM events WHERE id > ? "
                           "ORDER BY id LIMIT ?",
                           -1, &st, NULL) != SQLITE_OK)
        return db_error(r, err, "events");
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, max);
    int ret = 0, rc;
    while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW)
        ret = fn(sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                 (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3),
                 (const char *)sqlite3_column_text(st, 4), opaque);
    if (ret == 0 && rc != SQLITE_DONE)
        ret = db_error(r, err, "events");
    sqlite3_finalize(st);
    return ret;
}

int64_t registry_last_event(struct registry *r)
{
    sqlite3_stmt *st;
    int64_t id = 0;
    if (sqlite3_prepare_v2(r->db, "SELECT MAX(id) FROM events", -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

int registry_net_define(struct registry *r, const char *name, const char *definition,
                        int64_t *id_out, struct wisp_err *err)
{
    int ret = run(r, err, "network",
                  "INSERT INTO networks (name, definition, created_ms) VALUES (?, ?, ?)", "tti",
                  name, definition, registry_now_ms());
    if (ret == -EEXIST)
        return wisp_err_set(err, EEXIST, "a network named '%s' exists", name);
    if (ret == 0)
        *id_out = sqlite3_last_insert_rowid(r->db);
    return ret;
}

int registry_net_set_dnsmasq(struct registry *r, int64_t id, int64_t pid, uint64_t starttime,
                             struct wisp_err *err)
{
    return run(r, err, "network",
               "UPDATE networks SET dnsmasq_pid = ?, dnsmasq_starttime = ? WHERE id = ?", "iui",
               pid, starttime, id);
}

int registry_net_set_remove_pending(struct registry *r, int64_t id, struct wisp_err *err)
{
    return run(r, err, "network", "UPDATE networks SET remove_pending = 1 WHERE id = ?", "i", id);
}

int registry_net_remove(struct registry *r, int64_t id, struct wisp_err *err)
{
    return run(r, err, "network", "DELETE FROM networks WHERE id = ?", "i", id);
}

int registry_net_for_each(struct registry *r,
                          int (*fn)(const struct registry_net_row *row, void *opaque), void *opaque,
                          struct wisp_err *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(r->db,
                           "SELECT id, name, definition, remove_pending, dnsmasq_pid, "
                           "dnsmasq_starttime FROM networks ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return db_error(r, err, "listing networks");
    int ret = 0, rc;
    while (ret == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *name = sqlite3_column_text(st, 1), *def = sqlite3_column_text(st, 2);
        struct registry_net_row row = {
            .id = sqlite3_column_int64(st, 0),
            .name = name ? (const char *)name : "",
            .definition = def ? (const char *)def : "",
            .remove_pending = sqlite3_column_int64(st, 3) != 0,
            .dnsmasq_pid = sqlite3_column_int64(st, 4),
            .dnsmasq_starttime = (uint64_t)sqlite3_column_int64(st, 5),
        };
        ret = fn(&row, opaque);
    }
    if (ret == 0 && rc != SQLITE_DONE)
        ret = db_error(r, err, "listing networks");
    sqlite3_finalize(st);
    return ret;
}
