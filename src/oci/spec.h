/* config.json: loading, validation and what of it wisp-oci maps onto the VM (docs/oci.md). */
#ifndef WISP_OCI_SPEC_H
#define WISP_OCI_SPEC_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

struct oci_bind {
    char source[PATH_MAX];
    char destination[PATH_MAX];
    bool readonly;
    bool is_dir;
};

#define OCI_MAX_BINDS     16
#define OCI_MAX_DIR_BINDS 7 /* wisp-vmm takes 8 virtio-9p shares; the root is one */

struct oci_spec {
    json_t *config;        /* the whole config.json (owned) */
    json_t *process;       /* borrowed from config */
    char rootfs[PATH_MAX]; /* absolute */
    bool rootfs_readonly;
    bool terminal;
    const char *hostname;     /* NULL when none */
    uint64_t memory_limit;    /* bytes, 0 when none */
    unsigned vcpus;           /* from cpu.quota/period or cpu.cpus, 0 when neither */
    const char *cpuset;       /* linux.resources.cpu.cpus, NULL when none */
    const char *cgroups_path; /* NULL when none */
    const char *netns_path;   /* the network namespace to join, NULL for a new one */
    json_t *mounts;           /* the spec's mounts that the guest makes (borrowed, may be NULL) */
    struct oci_bind binds[OCI_MAX_BINDS]; /* bind mounts of host paths */
    unsigned n_binds;
};

/* Reads BUNDLE/config.json and checks it. Errors are runc's where runc has one ("JSON
 * specification file config.json not found"). */
int oci_spec_load(const char *bundle, struct oci_spec *spec, struct wisp_err *err);
void oci_spec_free(struct oci_spec *spec);
/* Checks an OCI process object (config.json's, or exec --process's); where names it. */
int oci_process_check(json_t *process, const char *where, struct wisp_err *err);
/* Reads a JSON object from a file ("-" is stdin), at most 4 MiB. */
json_t *oci_load_json_file(const char *path, struct wisp_err *err);

#endif
