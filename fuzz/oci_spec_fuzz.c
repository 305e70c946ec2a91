/* libFuzzer target: wisp-oci's config.json reader (src/oci/spec.c) and its mapping onto the
 * guest agent's structures (src/oci/agentmap.c), on any bytes as a bundle's config.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "oci/agentmap.h"
#include "oci/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char bundle[64];

static void remove_bundle(void)
{
    char path[128];

    snprintf(path, sizeof(path), "%s/config.json", bundle);
    unlink(path);
    snprintf(path, sizeof(path), "%s/rootfs", bundle);
    rmdir(path);
    rmdir(bundle);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[128];
    struct wisp_err err = {0};
    struct oci_spec spec;
    FILE *f;

    if (!bundle[0]) {
        snprintf(bundle, sizeof(bundle), "/tmp/oci-spec-fuzz-%d", (int)getpid());
        mkdir(bundle, 0700);
        snprintf(path, sizeof(path), "%s/rootfs", bundle);
        mkdir(path, 0700);
        atexit(remove_bundle);
    }
    snprintf(path, sizeof(path), "%s/config.json", bundle);
    f = fopen(path, "w");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    if (oci_spec_load(bundle, &spec, &err) == 0) {
        static const bool pipes[3] = {true, true, false};
        struct oci_agent_process *p = malloc(sizeof(*p));
        struct oci_agent_container *c = malloc(sizeof(*c));
        if (p && c) {
            oci_agent_process_from_json(spec.process, pipes, p, &err);
            oci_agent_container_from_spec("fuzz", &spec, c, &err);
            oci_agent_container_free(c); /* after a failure too: it frees what was read */
        }
        free(p);
        free(c);
    }
    oci_spec_free(&spec);
    return 0;
}
