/* config.json's process and container mapped onto the guest agent's structures
 * (agent/types.h). The structures point into the JSON and into the holder's storage. */
#ifndef WISP_OCI_AGENTMAP_H
#define WISP_OCI_AGENTMAP_H

#include <jansson.h>

#include "agent/types.h"
#include "host.h"
#include "spec.h"

struct oci_agent_process {
    struct wisp_agent_process p;
    const char *args[WISP_AGENT_ARGS_MAX], *env[WISP_AGENT_ARGS_MAX];
    uint32_t gids[WISP_AGENT_GROUPS_MAX];
    struct wisp_agent_rlimit rlimits[WISP_AGENT_RLIMITS_MAX];
};

/* stdio_pipe[i]: stream i is a pipe the host attaches (else /dev/null in the guest). */
int oci_agent_process_from_json(json_t *process, const bool stdio_pipe[3],
                                struct oci_agent_process *out, struct wisp_err *err);

struct oci_agent_container {
    struct wisp_agent_container c;
    struct wisp_agent_mount mounts[WISP_AGENT_MOUNTS_MAX];
    const char *options[WISP_AGENT_MOUNTS_MAX][WISP_AGENT_OPTIONS_MAX];
    char tags[OCI_MAX_BINDS][16];
    struct wisp_agent_file files[WISP_AGENT_FILES_MAX];
    void *file_data[WISP_AGENT_FILES_MAX];
};

/* The container: the root from virtio-9p tag "rootfs", the spec's mounts, each directory bind
 * as 9p tag "bindN", each file bind's contents as a file (at most 64 KiB). */
int oci_agent_container_from_spec(const char *id, const struct oci_spec *spec,
                                  struct oci_agent_container *out, struct wisp_err *err);
void oci_agent_container_free(struct oci_agent_container *out);

struct oci_agent_network {
    struct wisp_agent_network n;
    struct wisp_agent_iface iface;
    const char *addrs[8];
    struct wisp_agent_route routes[32];
};
void oci_agent_network_from_netif(const struct oci_netif *nif, struct oci_agent_network *out);

#endif
