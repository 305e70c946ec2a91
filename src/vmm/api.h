/* wisp-vmm's REST API (docs/api.md): Firecracker's resource model where wisp and Firecracker
 * overlap, served on the main loop over a unix socket (api/http.h), and the configuration
 * file, which holds the same resources. */
#ifndef WISP_VMM_API_H
#define WISP_VMM_API_H

#include <stdbool.h>

#include <jansson.h>

#include "api/http.h"
#include "common/err.h"
#include "vmm/config.h"

struct vmm;
struct vmm_metrics;

/*
 * Threads: the server, every handler and every answer run on the main thread (the main loop).
 * A handler never blocks: work that waits (a pause until the vCPUs are parked, a media change
 * on a drive's I/O thread) suspends the request and answers from a later callback.
 *
 * Adding a route: one line in the table of api_routes.c, with a handler of this file's shape
 * (void fn(struct api_request *req, void *opaque), opaque being the struct vmm_api *),
 * declared below or in the handler's own header.
 */
struct vmm_api {
    struct vmm *v;
    struct api_server *server;
    struct api_request *pending_pause; /* PATCH /vm Paused, until the vCPUs are parked */
    struct vmm_metrics *metrics;       /* PUT /metrics (vmm/metrics.c), NULL until then */
};

/* Serves the API of the configuration's --api-sock (a socket created 0600; a path that exists
 * is refused) or --api-sock-fd (an inherited listening socket); neither: no server. */
int vmm_api_start(struct vmm_api *a, struct vmm *v, struct wisp_err *err);
/* Answers what is pending (503), removes the socket; after vmm_run(), before vmm_destroy(). */
void vmm_api_stop(struct vmm_api *a);

/* For handlers: the body as a JSON object, or a 400 already given (-EINVAL). `where` names
 * the resource in the message. The caller json_decref()s *out. */
int vmm_api_body(struct api_request *req, const char *where, json_t **out);
/* A 400 {"fault_message": err->msg}. */
void vmm_api_fail(struct api_request *req, const struct wisp_err *err);
/* True in VMM_NOT_STARTED; otherwise answers 400 saying that `what` is for before the start. */
bool vmm_api_before_start(struct vmm_api *a, struct api_request *req, const char *what);

/* api_routes.c: every route, registered by vmm_api_start(). */
int vmm_api_add_routes(struct vmm_api *a, struct wisp_err *err);

/* ---- resources (api_resources.c, api_devices.c): JSON bodies applied to a configuration
 * before the start; shared by the API and --config-file. `where` names the resource in
 * messages ("PUT /drives/rootfs", "config.json: drives[0]"). 0 or -EINVAL with err. */
int vm_resource_boot_source(struct vm_config *cfg, const json_t *body, const char *where,
                            struct wisp_err *err);
/* patch: PATCH (absent fields stay) rather than PUT (absent fields take their defaults). */
int vm_resource_machine_config(struct vm_config *cfg, const json_t *body, bool patch,
                               const char *where, struct wisp_err *err);
/* id: the {drive_id} of the path (it must match the body's), or NULL (a config file). */
int vm_resource_drive(struct vm_config *cfg, const json_t *body, const char *id, const char *where,
                      struct wisp_err *err);
int vm_resource_nic(struct vm_config *cfg, const json_t *body, const char *id, const char *where,
                    struct wisp_err *err);
/* Entropy (virtio-rng) and the serial console (Firecracker's /entropy and /serial). */
int vm_resource_entropy(struct vm_config *cfg, const json_t *body, const char *where,
                        struct wisp_err *err);
/* Firecracker's Vsock (guest_cid, uds_path; vsock_id deprecated), api_vsock.c: PUT /vsock and
 * --config-file's "vsock"; its GET /vm/config object; its optional part of a snapshot's
 * configuration (after the NICs). */
int vm_resource_vsock(struct vm_config *cfg, const json_t *body, const char *where,
                      struct wisp_err *err);
json_t *vm_vsock_json(const struct vm_config *cfg);
/* Firecracker's Balloon body (api_balloon.c); its GET form. */
int vm_resource_balloon(struct vm_config *cfg, const json_t *body, const char *where,
                        struct wisp_err *err);
json_t *vm_balloon_json(const struct vm_config *cfg);
int vm_resource_serial(struct vm_config *cfg, const json_t *body, const char *where,
                       struct wisp_err *err);
/* wisp's own settings that have no Firecracker resource (the "wisp" object of docs/api.md). */
int vm_resource_wisp(struct vm_config *cfg, const json_t *body, const char *where,
                     struct wisp_err *err);
/* Logger: checks, records in cfg->api and applies it (wisp_log goes to log_path from now). */
int vm_resource_logger(struct vm_config *cfg, const json_t *body, const char *where,
                       struct wisp_err *err);
/* Metrics: checks and records metrics_path (vmm/metrics.c opens it). */
int vm_resource_metrics(struct vm_config *cfg, const json_t *body, const char *where,
                        struct wisp_err *err);

/* Firecracker's RateLimiter object. */
int fc_rate_limiter_parse(const json_t *j, const char *where, struct fc_rate_limiter *out,
                          struct wisp_err *err);
json_t *fc_rate_limiter_json(const struct fc_rate_limiter *rl);
/* Tokens per second of a bucket (0: no limit). */
uint64_t fc_bucket_rate(const struct fc_token_bucket *b);
/* A drive's throttling from a RateLimiter (the total buckets). */
void fc_rate_limiter_to_block(const struct fc_rate_limiter *rl, struct block_throttle_limits *l);
/* A NIC direction's limits from a RateLimiter. */
void fc_rate_limiter_to_net(const struct fc_rate_limiter *rl, struct virtio_net_rate *r);
/* An image a drive may use: it opens (read-only for read_only) without blocking, and is a file
 * or a block device. */
int vm_check_image(const char *what, const char *path, bool read_only, struct wisp_err *err);
/* A device id of the API (1 to 64 letters, digits, '_', '-'), the same as the path's when
 * path_id is not NULL; field names it in err. -EINVAL. */
int vm_check_id(const char *where, const char *field, const char *id, const char *path_id,
                struct wisp_err *err);
/* The virtio-9p shares (api_fs.c), a wisp extension: PUT /fs/{id} {fs_id, tag, path_on_host,
 * read_only} and --config-file's "fs" array (id: the path's, NULL: the body's); their GET
 * /vm/config array. */
int vm_resource_fs(struct vm_config *cfg, const json_t *body, const char *id, const char *where,
                   struct wisp_err *err);
json_t *vm_fs_json(const struct vm_config *cfg);
/* The pmem resource (api_pmem.c): Firecracker's Pmem body of PUT /pmem/{id} and of a
 * --config-file's "pmem" array; id is the path's (NULL: the body's). */
int vm_resource_pmem(struct vm_config *cfg, const json_t *body, const char *id, const char *where,
                     struct wisp_err *err);
json_t *vm_pmem_json(const struct vm_config *cfg, unsigned i);
/* The drive (NIC) with the API id `id` ("blkN"/"netN" for those given no id): its index, or -1. */
int vm_config_find_drive(const struct vm_config *cfg, const char *id);
int vm_config_find_nic(const struct vm_config *cfg, const char *id);
/* The name a drive (NIC) has in the machine and the API. */
const char *vm_drive_name(const struct vm_config *cfg, unsigned i, char *buf, size_t len);
const char *vm_nic_name(const struct vm_config *cfg, unsigned i, char *buf, size_t len);

/* Before vmm_start() from the API or a config file: the kernel command line from boot_args,
 * with root=/dev/vdX (or root=PARTUUID=...) and rw/ro for the root drive unless boot_args say
 * root= themselves (as Firecracker does). */
int vm_config_prepare_start(struct vm_config *cfg, struct wisp_err *err);

/* ---- the whole configuration (api_export.c): GET /vm/config, in the config file's shape */
json_t *vm_config_to_json(const struct vm_config *cfg);
json_t *vm_machine_config_json(const struct vm_config *cfg);

/* ---- config_file.c: --config-file F, one object with the resources as members
 * (Firecracker's: boot-source, machine-config, drives, network-interfaces, logger, metrics,
 * vsock, balloon; and entropy, serial, wisp). Applied to cfg; -EINVAL with err naming the file
 * and the member. */
int vm_config_load_file(struct vm_config *cfg, const char *path, struct wisp_err *err);

#endif
