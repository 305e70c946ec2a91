/* What a struct vmm keeps for snapshots (snapshot_int.h): created on first use, freed after the
 * machine. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "vmm/snapshot_int.h"
#include "vmm/vmm.h"

struct vmm_snapshot *vmm_snapshot_get(struct vmm *v, struct wisp_err *err)
{
    if (v->snap)
        return v->snap;
    struct vmm_snapshot *s = calloc(1, sizeof(*s));
    if (!s) {
        wisp_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    s->ram = SNAPSHOT_RAM_ANON;
    s->uffd = s->uffd_sock = -1;
    v->snap = s;
    return s;
}

void vmm_snapshot_free(struct vmm *v)
{
    struct vmm_snapshot *s = v->snap;
    if (!s)
        return;
    evloop_source_remove(s->uffd_src);
    if (s->uffd_sock >= 0)
        close(s->uffd_sock);
    if (s->uffd >= 0)
        close(s->uffd);
    if (s->have_cfg)
        vm_config_free(&s->cfg);
    free(s);
    v->snap = NULL;
}
