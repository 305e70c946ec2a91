/* The guest agent protocol's codec (docs/agent-protocol.md): frames, TLV fields and the one
 * message structure every request and response decodes into. Shared by the host's client
 * library and the guest agent; every field is validated on decode (lengths, counts, strings
 * NUL-terminated, NUL-free and bounded). */
#ifndef WISP_AGENT_PROTO_H
#define WISP_AGENT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent/types.h"
#include "common/err.h"

/* A frame: a 12-byte header (little-endian) and `len` bytes of TLV fields. */
#define WA_HDR_SIZE    12
#define WA_MAX_PAYLOAD (1u << 20)

/* Request types; a response has the request's type | WA_RESPONSE and the request's id. */
enum wa_type {
    WA_HELLO = 1,
    WA_CONTAINER_CREATE = 2,
    WA_PROCESS_CREATE = 3,
    WA_PROCESS_START = 4,
    WA_SIGNAL = 5,
    WA_WAIT = 6,
    WA_RESIZE = 7,
    WA_PS = 8,
    WA_NETWORK = 9,
    WA_CONTAINER_DELETE = 10,
    WA_SHUTDOWN = 11,
    WA_ATTACH = 12,
    WA_PROCESS_DELETE = 13,
    WA_TYPE_MAX = 13,
};
#define WA_RESPONSE 0x8000u

struct wa_hdr {
    uint32_t len;   /* payload bytes, <= WA_MAX_PAYLOAD */
    uint16_t type;  /* enum wa_type, | WA_RESPONSE in answers */
    uint16_t flags; /* 0 */
    uint32_t id;    /* chosen by the client, echoed by the answer */
};

/* Field tags (one namespace for every message; nested fields live inside a nested tag). */
enum wa_tag {
    WT_VERSION = 1,   /* u32 */
    WT_NAME = 2,      /* string: the peer's program and version */
    WT_ERRNO = 3,     /* u32: 0 = success, else a Linux errno */
    WT_MESSAGE = 4,   /* string: what failed */
    WT_CONTAINER = 5, /* string: container id */
    WT_EXEC_ID = 6,   /* string: "" = the container's own process */
    WT_ARG = 10,      /* string, repeated */
    WT_ENV = 11,      /* string, repeated, NAME=value */
    WT_CWD = 12,
    WT_UID = 13,
    WT_GID = 14,
    WT_GROUP = 15, /* u32, repeated */
    WT_UMASK = 16,
    WT_RLIMIT = 17, /* nested: WT_RLIMIT_TYPE, WT_SOFT, WT_HARD */
    WT_RLIMIT_TYPE = 18,
    WT_SOFT = 19, /* u64 */
    WT_HARD = 20, /* u64 */
    WT_NO_NEW_PRIVS = 21,
    WT_TERMINAL = 22,
    WT_ROWS = 23,
    WT_COLS = 24,
    WT_STDIN = 25, /* u32 enum wisp_agent_stdio */
    WT_STDOUT = 26,
    WT_STDERR = 27,
    WT_ROOTFS_TAG = 30,
    WT_ROOTFS_PATH = 31,
    WT_READONLY = 32,
    WT_HOSTNAME = 33,
    WT_MOUNT = 34, /* nested: WT_MOUNT_TYPE, WT_SOURCE, WT_DESTINATION, WT_OPTION* */
    WT_MOUNT_TYPE = 35,
    WT_SOURCE = 36,
    WT_DESTINATION = 37,
    WT_OPTION = 38,
    WT_FILE = 39, /* nested: WT_PATH, WT_DATA, WT_MODE */
    WT_PATH = 40,
    WT_DATA = 41, /* bytes */
    WT_MODE = 42,
    WT_DEFAULT_DEVICES = 43,
    WT_SEED = 44, /* bytes: the guest RNG's new seed (CONTAINER_CREATE) */
    WT_PID = 50,
    WT_SIGNAL = 51,
    WT_ALL = 52,
    WT_STATUS = 53, /* u32: a wait status as waitpid(2) gives it */
    WT_STREAM = 54, /* u32 enum wisp_agent_stream */
    WT_PROC = 55,   /* nested: WT_PID, WT_PPID, WT_UID, WT_STATE, WT_CMD, WT_EXEC_ID */
    WT_PPID = 56,
    WT_STATE = 57,
    WT_CMD = 58,
    WT_IFACE = 60, /* nested: WT_IFNAME, WT_MTU, WT_ADDRESS*, WT_UP */
    WT_IFNAME = 61,
    WT_MTU = 62,
    WT_ADDRESS = 63,
    WT_UP = 64,
    WT_ROUTE = 65, /* nested: WT_DESTINATION, WT_GATEWAY, WT_IFNAME */
    WT_GATEWAY = 66,
    WT_RESOLV_CONF = 67,
    WT_TIMEOUT_MS = 70,
    WT_TAG_MAX = 127,
};

/*
 * Every request and response decodes into this structure; the fields a message type uses are
 * listed in docs/agent-protocol.md. `have` tells which top-level fields were present (bit =
 * tag). Strings and bytes point into the decoded payload, which must outlive the message;
 * arrays are allocated and freed by wa_msg_free().
 */
struct wa_msg {
    uint16_t type;
    uint32_t id;
    uint64_t have[2];
    uint32_t version;
    const char *name;
    uint32_t errnum;
    const char *message;
    const char *container, *exec_id;
    struct wisp_agent_process process;
    struct wisp_agent_container ctr;
    struct wisp_agent_network net;
    uint32_t pid, signo, status, stream;
    bool all;
    uint32_t timeout_ms;
    struct wisp_agent_ps_entry *procs;
    size_t nprocs;
};

static inline bool wa_has(const struct wa_msg *m, enum wa_tag t)
{
    return (m->have[t / 64] >> (t % 64)) & 1;
}
static inline void wa_set(struct wa_msg *m, enum wa_tag t)
{
    m->have[t / 64] |= 1ull << (t % 64);
}

/* Frees the arrays a decode allocated (wa_decode's, not an encoder's inputs); idempotent. */
void wa_msg_free(struct wa_msg *m);

/* The name of a message type ("PROCESS_CREATE"), for messages. */
const char *wa_type_name(uint16_t type);

/* Parses a 12-byte header; checks flags 0, len <= WA_MAX_PAYLOAD and a known type. */
int wa_hdr_decode(const uint8_t *buf, struct wa_hdr *h, struct wisp_err *err);
void wa_hdr_encode(uint8_t *buf, const struct wa_hdr *h);

/* A growing output buffer; errors are sticky (checked once at the end). */
struct wa_buf {
    uint8_t *data;
    size_t len, cap;
    int error; /* 0, -ENOMEM or -E2BIG (a payload over WA_MAX_PAYLOAD) */
};
void wa_buf_free(struct wa_buf *b);

/* Appends a whole frame (header + the fields of m that `have` marks, plus the arrays and
 * strings that are set) for m->type and m->id. Returns 0 or b->error. */
int wa_encode(struct wa_buf *b, const struct wa_msg *m);

/*
 * Decodes `len` bytes of fields for a message of `type` into *m (zeroed first). Checks every
 * field's size and bounds, rejects duplicates of single fields, skips unknown tags, then checks
 * that the fields the type needs are present (wa_msg_check). On failure *m holds nothing to free.
 */
int wa_decode(uint16_t type, uint32_t id, const uint8_t *payload, size_t len, struct wa_msg *m,
              struct wisp_err *err);

/* The message-level checks (required fields, ids, absolute paths, ranges), used by wa_decode
 * and by encoders' callers before sending. */
int wa_msg_check(const struct wa_msg *m, struct wisp_err *err);

/* Validates a container or exec id: 1-64 bytes of [A-Za-z0-9_.+-] (an exec id may be ""). */
bool wa_id_valid(const char *id, bool may_be_empty);

/* "a.b.c.d/N" (or IPv6 ADDRESS/N): family (AF_INET/AF_INET6), address bytes, prefix length.
 * Returns 0 or -EINVAL. */
int wa_cidr_parse(const char *s, int *family, uint8_t addr[16], unsigned *prefix);

/* RLIMIT_* name <-> number (Linux's generic numbering); -1 when unknown. */
int wa_rlimit_from_name(const char *name);

#endif
