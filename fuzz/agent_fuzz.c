/* libFuzzer target: the guest agent protocol's decoder (src/agent/proto.c, proto_check.c), as
 * both the agent (requests) and libwisp_agent (answers) run it on bytes from the other side.
 *
 * Input: one frame, a 12-byte header and its payload (the header's len is taken up to what
 * the input holds). The payload is decoded as the header's type; what decodes is encoded again
 * and must decode again to the same fields (the codec agrees with itself), and it is also
 * decoded as every other type (the checks of each message on any fields). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reencode(const struct wa_msg *m)
{
    struct wisp_err err = {0};
    struct wa_buf b = {0};
    struct wa_msg again;
    struct wa_hdr h;

    if (wa_encode(&b, m) != 0) {
        wa_buf_free(&b);
        return;
    }
    if (wa_hdr_decode(b.data, &h, &err) != 0 ||
        wa_decode(h.type, h.id, b.data + WA_HDR_SIZE, h.len, &again, &err) != 0)
        abort(); /* what decoded once must decode again */
    if (again.process.nargs != m->process.nargs || again.ctr.nmounts != m->ctr.nmounts ||
        again.net.nifaces != m->net.nifaces || again.nprocs != m->nprocs ||
        (m->container && strcmp(again.container, m->container) != 0))
        abort();
    wa_msg_free(&again);
    wa_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct wisp_err err = {0};
    struct wa_msg m;
    struct wa_hdr h;
    size_t len;

    if (size < WA_HDR_SIZE || wa_hdr_decode(data, &h, &err) != 0)
        return 0;
    len = size - WA_HDR_SIZE < h.len ? size - WA_HDR_SIZE : h.len;
    if (wa_decode(h.type, h.id, data + WA_HDR_SIZE, len, &m, &err) == 0) {
        reencode(&m);
        wa_msg_free(&m);
    }
    for (uint16_t t = 1; t <= WA_TYPE_MAX; t++) {
        uint16_t types[2] = {t, (uint16_t)(t | WA_RESPONSE)};

        for (int i = 0; i < 2; i++)
            if (types[i] != h.type &&
                wa_decode(types[i], 0, data + WA_HDR_SIZE, len, &m, &err) == 0)
                wa_msg_free(&m);
    }
    return 0;
}
