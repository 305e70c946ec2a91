/* wispd's state: the VMs it supervises (supervisor.c), its API (server.c), its registry. */
#ifndef WISP_WISPD_WISPD_H
#define WISP_WISPD_WISPD_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"
#include "placement.h"

struct api_request;
struct evloop;
struct evloop_source;
struct netstate;
struct registry;
struct vmm_client;
struct vmm_request;
struct vm_console;
struct consoles;
struct event_stream;

enum vm_state { VM_STOPPED, VM_STARTING, VM_RUNNING, VM_PAUSED, VM_STOPPING };

#define VM_MAX_WAITERS 8
#define VM_HASH_SIZE   4096

struct vm {
    struct wispd *d;
    int64_t id;
    char *name;
    json_t *def; /* the definition, as vmdef_parse() accepted it */
    enum vm_state state;
    int pid, pidfd;
    bool child; /* spawned by this wispd (waitid works), not reattached */
    uint64_t starttime;
    int64_t started_ms;
    char api_sock[108];
    struct evloop_source *pidfd_src, *timer;
    struct vmm_client *client;
    int stop_stage; /* 0 none, 1 Ctrl-Alt-Del sent, 2 SIGTERM sent, 3 SIGKILL sent */
    bool stop_requested, restart_after_stop, remove_pending;
    int64_t restarts;
    unsigned backoff_ms;
    char last_exit[256];
    char start_error[256];      /* wisp-vmm refused the start: the waiters' answer at its end */
    struct vm_console *console; /* console.c: its readers, while it has some */
    /* clone.c: the next start loads this snapshot instead of booting (then forgotten), and
     * on_start hears how that start ended */
    char *restore_state, *restore_mem;
    void (*on_start)(struct vm *vm, void *opaque, bool ok, const char *msg);
    void *on_start_opaque;
    struct api_request *waiters[VM_MAX_WAITERS];
    unsigned nr_waiters;
    struct vm_place place;      /* this run's cgroups, NUMA node, jail (placement.h) */
    struct vm_reclaim *reclaim; /* reclaim.c: while it runs in balloon auto mode */
    struct vm *hash_next;
};

struct wispd {
    struct evloop *loop;
    struct registry *reg;
    char *state_dir;
    char *vmm_path;
    char *img_path; /* wisp-img: the overlays of clones with writable drives (overlay.c) */
    struct api_server *server;
    struct vm *hash[VM_HASH_SIZE];
    struct netstate *net; /* networks and MACs (network.h) */
    unsigned nr_vms, nr_live;
    struct wispd_place place; /* cgroups, NUMA nodes, the jailer (placement.h) */
    int base_fds;
    uint64_t console_log_max;  /* --console-log-max: bytes of each VM's console log kept */
    struct consoles *consoles; /* console.c */
    /* events long-polls waiting for the next event */
    struct api_request *event_waiters[64];
    int64_t event_after[64];
    unsigned nr_event_waiters;
    struct event_stream *event_streams; /* events.c: GET /v1/events?follow=1 */
    struct reclaim *reclaim;            /* reclaim.c: the automatic balloon (NULL: off) */
};

const char *vm_state_name(enum vm_state s);
struct vm *wispd_find(struct wispd *d, const char *name);
json_t *vm_to_json(const struct vm *vm);

/* vmdef.c: checks a definition and gives it back with defaults filled in (new reference). */
int vmdef_parse(const char *text, size_t len, json_t **out, struct wisp_err *err);

/* supervisor.c. Each answers `req` (suspended until the VM gets there) or fails with err. */
int vm_create(struct wispd *d, json_t *def, int64_t id, struct vm **out, struct wisp_err *err);
int vm_start(struct vm *vm, struct api_request *req, struct wisp_err *err);
int vm_stop(struct vm *vm, bool force, struct api_request *req, struct wisp_err *err);
int vm_restart(struct vm *vm, struct api_request *req, struct wisp_err *err);
int vm_pause(struct vm *vm, bool pause, struct api_request *req, struct wisp_err *err);
int vm_remove(struct vm *vm, bool force, struct api_request *req, struct wisp_err *err);
int wispd_recover(struct wispd *d, struct wisp_err *err);
/* Field 22 of /proc/PID/stat, the process's start time, which tells a reused pid. */
int read_starttime(int pid, uint64_t *out);
/* Appends ": " and the last line of the file at path (of its last 255 bytes) to out. */
void wispd_append_last_line(const char *path, char *out, size_t size);
void wispd_event(struct wispd *d, const char *vm, const char *kind, const char *detail);
/* The room for one more VM of `vcpus` vCPUs: 0, or -EMFILE/-EAGAIN naming the limit. */
int wispd_check_limits(struct wispd *d, unsigned vcpus, struct wisp_err *err);
json_t *wispd_limits_json(struct wispd *d);

/* console.c: the input FIFO opened for the child's stdin (an fd, or a negative errno); the
 * VM ended (its readers get the rest, then the end); the VM is removed (its FIFO goes). */
int console_open_input(struct vm *vm, struct wisp_err *err);
void console_vm_ended(struct vm *vm);
void console_vm_removed(struct vm *vm);
/* wispd ends: the attached consoles are closed (their VMs go on). */
void console_shutdown(struct wispd *d);
void console_h_log(struct api_request *req, void *opaque);
void console_h_attach(struct api_request *req, void *opaque);

/* events.c: the event stream (GET /v1/events?follow=1) and its wake at each event */
void events_h_stream(struct api_request *req, struct wispd *d);
void events_wake(struct wispd *d);

/* clone.c: the snapshot/load requests of a restore (used by build_requests); the routes */
size_t clone_restore_requests(const struct vm *vm, struct vmm_request *r, size_t max);
void clone_h_snapshot(struct api_request *req, void *opaque);
void clone_h_restore(struct api_request *req, void *opaque);
void clone_h_clone(struct api_request *req, void *opaque);

/* stats.c: GET /v1/vms/{name}/stats */
void stats_h_get(struct api_request *req, void *opaque);

/* server.c */
/* The VM of the request's {name}, or NULL after a 404; the live one (running or paused), or
 * NULL after a 404 or a 409 that says `what` needs a running VM. */
struct vm *wispd_vm_or_404(struct wispd *d, struct api_request *req);
struct vm *wispd_live_vm_or_reply(struct wispd *d, struct api_request *req, const char *what);
int wispd_serve(struct wispd *d, const char *socket_path, struct wisp_err *err);
void wispd_events_notify(struct wispd *d);

#endif
