/* wisp-vmm's metrics (PUT /metrics, docs/api.md): one JSON line per flush with counters per
 * device, as Firecracker writes them, to a file or FIFO, never blocking. */
#ifndef WISP_VMM_METRICS_H
#define WISP_VMM_METRICS_H

#include <jansson.h>

#include "common/err.h"

struct vmm;
struct vmm_metrics;

/* Opens path (a file appended to, a FIFO with a reader: nothing waits for either) and writes a
 * line every 60 s from the main loop, and on vmm_metrics_flush(). Main thread. */
int vmm_metrics_start(struct vmm_metrics **out, struct vmm *v, const char *path,
                      struct wisp_err *err);
/* Writes a line now (FlushMetrics). A line that does not fit in the output buffer (a reader
 * that does not read) is dropped and counted in the next one. */
int vmm_metrics_flush(struct vmm_metrics *m, struct wisp_err *err);
/* GET /wisp/metrics (wisp's own): a metrics line's block, net and memory members, with the
 * counters since the start instead of since the previous line, and the VM's state. Needs no
 * PUT /metrics. Main thread. */
json_t *vmm_metrics_totals(struct vmm *v);
/* Writes a last line and gives it a bounded time to leave. NULL is fine. */
void vmm_metrics_stop(struct vmm_metrics *m);

#endif
