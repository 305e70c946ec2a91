/* The guest agent protocol's frames and fields: header, encoder, decoder (docs/agent-protocol.md).
 */
#include "agent/proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define FIELD_HDR 6 /* le16 tag, le32 len */

static const char *const type_names[] = {
    [WA_HELLO] = "HELLO",
    [WA_CONTAINER_CREATE] = "CONTAINER_CREATE",
    [WA_PROCESS_CREATE] = "PROCESS_CREATE",
    [WA_PROCESS_START] = "PROCESS_START",
    [WA_SIGNAL] = "SIGNAL",
    [WA_WAIT] = "WAIT",
    [WA_RESIZE] = "RESIZE",
    [WA_PS] = "PS",
    [WA_NETWORK] = "NETWORK",
    [WA_CONTAINER_DELETE] = "CONTAINER_DELETE",
    [WA_SHUTDOWN] = "SHUTDOWN",
    [WA_ATTACH] = "ATTACH",
    [WA_PROCESS_DELETE] = "PROCESS_DELETE",
};

const char *wa_type_name(uint16_t type)
{
    uint16_t t = type & (uint16_t)~WA_RESPONSE;

    if (t == 0 || t > WA_TYPE_MAX)
        return "UNKNOWN";
    return type_names[t];
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)v);
    put16(p + 2, (uint16_t)(v >> 16));
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

int wa_hdr_decode(const uint8_t *buf, struct wa_hdr *h, struct wisp_err *err)
{
    uint16_t t;

    h->len = get32(buf);
    h->type = get16(buf + 4);
    h->flags = get16(buf + 6);
    h->id = get32(buf + 8);
    t = h->type & (uint16_t)~WA_RESPONSE;
    if (h->len > WA_MAX_PAYLOAD)
        return wisp_err_set(err, EMSGSIZE, "a frame of %u bytes (at most %u)", h->len,
                            WA_MAX_PAYLOAD);
    if (h->flags != 0)
        return wisp_err_set(err, EPROTO, "frame flags 0x%x (must be 0)", h->flags);
    if (t == 0 || t > WA_TYPE_MAX)
        return wisp_err_set(err, EPROTO, "unknown frame type 0x%x", h->type);
    return 0;
}

void wa_hdr_encode(uint8_t *buf, const struct wa_hdr *h)
{
    put32(buf, h->len);
    put16(buf + 4, h->type);
    put16(buf + 6, h->flags);
    put32(buf + 8, h->id);
}

/* --- encoding */

void wa_buf_free(struct wa_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static uint8_t *buf_room(struct wa_buf *b, size_t n)
{
    if (b->error)
        return NULL;
    if (n > WA_HDR_SIZE + WA_MAX_PAYLOAD || b->len > WA_HDR_SIZE + WA_MAX_PAYLOAD - n) {
        b->error = -E2BIG;
        return NULL;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        uint8_t *p;

        while (cap < b->len + n)
            cap *= 2;
        p = realloc(b->data, cap);
        if (!p) {
            b->error = -ENOMEM;
            return NULL;
        }
        b->data = p;
        b->cap = cap;
    }
    b->len += n;
    return b->data + b->len - n;
}

static void put_field(struct wa_buf *b, uint16_t tag, const void *val, size_t len)
{
    uint8_t *p;

    if (len > WA_MAX_PAYLOAD) {
        b->error = b->error ? b->error : -E2BIG;
        return;
    }
    p = buf_room(b, FIELD_HDR + len);
    if (!p)
        return;
    put16(p, tag);
    put32(p + 2, (uint32_t)len);
    if (len)
        memcpy(p + FIELD_HDR, val, len);
}

static void put_u32(struct wa_buf *b, uint16_t tag, uint32_t v)
{
    uint8_t raw[4];

    put32(raw, v);
    put_field(b, tag, raw, sizeof(raw));
}

static void put_u64(struct wa_buf *b, uint16_t tag, uint64_t v)
{
    uint8_t raw[8];

    put64(raw, v);
    put_field(b, tag, raw, sizeof(raw));
}

/* Strings travel with their NUL, so the decoder can point into the payload. */
static void put_str(struct wa_buf *b, uint16_t tag, const char *s)
{
    if (s)
        put_field(b, tag, s, strlen(s) + 1);
}

static void put_strs(struct wa_buf *b, uint16_t tag, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        put_str(b, tag, v[i]);
}

/* A nested field: its header now, its length once the inner fields are written. */
static size_t nest_begin(struct wa_buf *b, uint16_t tag)
{
    put_field(b, tag, NULL, 0);
    return b->len;
}

static void nest_end(struct wa_buf *b, size_t start)
{
    if (!b->error)
        put32(b->data + start - 4, (uint32_t)(b->len - start));
}

static void encode_process(struct wa_buf *b, const struct wa_msg *m)
{
    const struct wisp_agent_process *p = &m->process;

    put_strs(b, WT_ARG, p->args, p->nargs);
    put_strs(b, WT_ENV, p->env, p->nenv);
    put_str(b, WT_CWD, p->cwd);
    if (wa_has(m, WT_UID))
        put_u32(b, WT_UID, p->uid);
    if (wa_has(m, WT_GID))
        put_u32(b, WT_GID, p->gid);
    for (size_t i = 0; i < p->ngids; i++)
        put_u32(b, WT_GROUP, p->additional_gids[i]);
    if (p->has_umask)
        put_u32(b, WT_UMASK, p->umask);
    for (size_t i = 0; i < p->nrlimits; i++) {
        size_t at = nest_begin(b, WT_RLIMIT);

        put_str(b, WT_RLIMIT_TYPE, p->rlimits[i].type);
        put_u64(b, WT_SOFT, p->rlimits[i].soft);
        put_u64(b, WT_HARD, p->rlimits[i].hard);
        nest_end(b, at);
    }
    if (p->no_new_privileges)
        put_u32(b, WT_NO_NEW_PRIVS, 1);
    if (p->terminal)
        put_u32(b, WT_TERMINAL, 1);
    if (p->rows)
        put_u32(b, WT_ROWS, p->rows);
    if (p->cols)
        put_u32(b, WT_COLS, p->cols);
    if (wa_has(m, WT_STDIN))
        put_u32(b, WT_STDIN, p->stdio[0]);
    if (wa_has(m, WT_STDOUT))
        put_u32(b, WT_STDOUT, p->stdio[1]);
    if (wa_has(m, WT_STDERR))
        put_u32(b, WT_STDERR, p->stdio[2]);
}

static void encode_container(struct wa_buf *b, const struct wisp_agent_container *c)
{
    put_str(b, WT_ROOTFS_TAG, c->rootfs_tag);
    put_str(b, WT_ROOTFS_PATH, c->rootfs_path);
    if (c->rootfs_readonly)
        put_u32(b, WT_READONLY, 1);
    put_str(b, WT_HOSTNAME, c->hostname);
    for (size_t i = 0; i < c->nmounts; i++) {
        const struct wisp_agent_mount *mt = &c->mounts[i];
        size_t at = nest_begin(b, WT_MOUNT);

        put_str(b, WT_MOUNT_TYPE, mt->type);
        put_str(b, WT_SOURCE, mt->source);
        put_str(b, WT_DESTINATION, mt->destination);
        put_strs(b, WT_OPTION, mt->options, mt->noptions);
        nest_end(b, at);
    }
    for (size_t i = 0; i < c->nfiles; i++) {
        size_t at = nest_begin(b, WT_FILE);

        put_str(b, WT_PATH, c->files[i].path);
        put_field(b, WT_DATA, c->files[i].data, c->files[i].len);
        put_u32(b, WT_MODE, c->files[i].mode);
        nest_end(b, at);
    }
    if (c->default_devices)
        put_u32(b, WT_DEFAULT_DEVICES, 1);
    if (c->seed_len)
        put_field(b, WT_SEED, c->seed, c->seed_len);
}

static void encode_network(struct wa_buf *b, const struct wisp_agent_network *n)
{
    for (size_t i = 0; i < n->nifaces; i++) {
        const struct wisp_agent_iface *f = &n->ifaces[i];
        size_t at = nest_begin(b, WT_IFACE);

        put_str(b, WT_IFNAME, f->name);
        if (f->mtu)
            put_u32(b, WT_MTU, f->mtu);
        put_strs(b, WT_ADDRESS, f->addresses, f->naddresses);
        if (f->up)
            put_u32(b, WT_UP, 1);
        nest_end(b, at);
    }
    for (size_t i = 0; i < n->nroutes; i++) {
        size_t at = nest_begin(b, WT_ROUTE);

        put_str(b, WT_DESTINATION, n->routes[i].destination);
        put_str(b, WT_GATEWAY, n->routes[i].gateway);
        put_str(b, WT_IFNAME, n->routes[i].device);
        nest_end(b, at);
    }
    put_str(b, WT_RESOLV_CONF, n->resolv_conf);
}

static void encode_procs(struct wa_buf *b, const struct wa_msg *m)
{
    for (size_t i = 0; i < m->nprocs; i++) {
        const struct wisp_agent_ps_entry *e = &m->procs[i];
        size_t at = nest_begin(b, WT_PROC);

        put_u32(b, WT_PID, e->pid);
        put_u32(b, WT_PPID, e->ppid);
        put_u32(b, WT_UID, e->uid);
        put_str(b, WT_STATE, e->state);
        put_str(b, WT_CMD, e->cmd);
        put_str(b, WT_EXEC_ID, e->exec_id);
        nest_end(b, at);
    }
}

int wa_encode(struct wa_buf *b, const struct wa_msg *m)
{
    size_t start = b->len;
    uint8_t *hdr = buf_room(b, WA_HDR_SIZE);
    struct wa_hdr h = {.type = m->type, .id = m->id};

    if (!hdr)
        return b->error;
    if (wa_has(m, WT_VERSION))
        put_u32(b, WT_VERSION, m->version);
    put_str(b, WT_NAME, m->name);
    if (m->type & WA_RESPONSE)
        put_u32(b, WT_ERRNO, m->errnum);
    put_str(b, WT_MESSAGE, m->message);
    put_str(b, WT_CONTAINER, m->container);
    put_str(b, WT_EXEC_ID, m->exec_id);
    encode_process(b, m);
    encode_container(b, &m->ctr);
    encode_network(b, &m->net);
    if (wa_has(m, WT_PID))
        put_u32(b, WT_PID, m->pid);
    if (wa_has(m, WT_SIGNAL))
        put_u32(b, WT_SIGNAL, m->signo);
    if (m->all)
        put_u32(b, WT_ALL, 1);
    if (wa_has(m, WT_STATUS))
        put_u32(b, WT_STATUS, m->status);
    if (wa_has(m, WT_STREAM))
        put_u32(b, WT_STREAM, m->stream);
    if (wa_has(m, WT_TIMEOUT_MS))
        put_u32(b, WT_TIMEOUT_MS, m->timeout_ms);
    encode_procs(b, m);
    if (b->error)
        return b->error;
    h.len = (uint32_t)(b->len - start - WA_HDR_SIZE);
    wa_hdr_encode(b->data + start, &h);
    return 0;
}

/* --- decoding */

struct cursor {
    const uint8_t *p;
    size_t left;
};

struct field {
    uint16_t tag;
    const uint8_t *val;
    uint32_t len;
};

static int next_field(struct cursor *c, struct field *f, struct wisp_err *err)
{
    if (c->left < FIELD_HDR)
        return wisp_err_set(err, EPROTO, "a field header cut short (%zu bytes left)", c->left);
    f->tag = get16(c->p);
    f->len = get32(c->p + 2);
    if (f->len > c->left - FIELD_HDR)
        return wisp_err_set(err, EPROTO, "field %u: %u bytes, but only %zu are left", f->tag,
                            f->len, c->left - FIELD_HDR);
    f->val = c->p + FIELD_HDR;
    c->p += FIELD_HDR + f->len;
    c->left -= FIELD_HDR + f->len;
    return 0;
}

static int get_str(const struct field *f, size_t max, const char **out, struct wisp_err *err)
{
    if (f->len == 0 || f->val[f->len - 1] != '\0')
        return wisp_err_set(err, EPROTO, "field %u: a string without its NUL", f->tag);
    if (memchr(f->val, '\0', f->len - 1))
        return wisp_err_set(err, EPROTO, "field %u: a string with a NUL inside", f->tag);
    if (f->len - 1 > max)
        return wisp_err_set(err, EPROTO, "field %u: a string of %u bytes (at most %zu)", f->tag,
                            f->len - 1, max);
    *out = (const char *)f->val;
    return 0;
}

static int get_u32(const struct field *f, uint32_t *out, struct wisp_err *err)
{
    if (f->len != 4)
        return wisp_err_set(err, EPROTO, "field %u: %u bytes for a u32", f->tag, f->len);
    *out = get32(f->val);
    return 0;
}

static int get_u64(const struct field *f, uint64_t *out, struct wisp_err *err)
{
    if (f->len != 8)
        return wisp_err_set(err, EPROTO, "field %u: %u bytes for a u64", f->tag, f->len);
    *out = get64(f->val);
    return 0;
}

static int get_bool(const struct field *f, bool *out, struct wisp_err *err)
{
    uint32_t v = 0;
    int r = get_u32(f, &v, err);

    if (r < 0)
        return r;
    if (v > 1)
        return wisp_err_set(err, EPROTO, "field %u: %u for a flag (0 or 1)", f->tag, v);
    *out = v;
    return 0;
}

/* Appends one element of `size` bytes to *arr (count *n, at most max); returns it zeroed. */
static void *push(void *arrp, size_t *n, size_t size, size_t max, uint16_t tag,
                  struct wisp_err *err)
{
    void **arr = arrp;
    uint8_t *p;

    if (*n >= max) {
        wisp_err_set(err, EPROTO, "field %u: more than %zu of them", tag, max);
        return NULL;
    }
    p = realloc(*arr, (*n + 1) * size);
    if (!p) {
        wisp_err_set(err, ENOMEM, "field %u: out of memory", tag);
        return NULL;
    }
    *arr = p;
    memset(p + *n * size, 0, size);
    return p + (*n)++ * size;
}

static int push_str(const struct field *f, const char ***arr, size_t *n, size_t max, size_t strmax,
                    struct wisp_err *err)
{
    const char *s = NULL, **slot;
    int r = get_str(f, strmax, &s, err);

    if (r < 0)
        return r;
    slot = push(arr, n, sizeof(*slot), max, f->tag, err);
    if (!slot)
        return -err->errnum;
    *slot = s;
    return 0;
}

/* Marks a single field seen; a second one is an error. */
static int once(uint64_t *seen, const struct field *f, struct wisp_err *err)
{
    uint64_t bit;

    if (f->tag > WT_TAG_MAX)
        return 0;
    bit = 1ull << (f->tag % 64);
    if (seen[f->tag / 64] & bit)
        return wisp_err_set(err, EPROTO, "field %u given twice", f->tag);
    seen[f->tag / 64] |= bit;
    return 0;
}

static int decode_rlimit(const struct field *outer, struct wa_msg *m, struct wisp_err *err)
{
    struct cursor c = {outer->val, outer->len};
    struct wisp_agent_rlimit *rl;
    uint64_t seen[2] = {0, 0};
    struct field f;
    int r = 0;

    rl = push(&m->process.rlimits, &m->process.nrlimits, sizeof(*rl), WISP_AGENT_RLIMITS_MAX,
              outer->tag, err);
    if (!rl)
        return -err->errnum;
    while (c.left && r == 0) {
        if ((r = next_field(&c, &f, err)) < 0 || (r = once(seen, &f, err)) < 0)
            break;
        if (f.tag == WT_RLIMIT_TYPE)
            r = get_str(&f, WISP_AGENT_SHORT_MAX, &rl->type, err);
        else if (f.tag == WT_SOFT)
            r = get_u64(&f, &rl->soft, err);
        else if (f.tag == WT_HARD)
            r = get_u64(&f, &rl->hard, err);
    }
    if (r == 0 && (!rl->type || !(seen[0] & (1ull << WT_SOFT)) || !(seen[0] & (1ull << WT_HARD))))
        r = wisp_err_set(err, EPROTO, "an rlimit without its type, soft or hard value");
    return r;
}

static int decode_mount(const struct field *outer, struct wa_msg *m, struct wisp_err *err)
{
    struct cursor c = {outer->val, outer->len};
    struct wisp_agent_mount *mt;
    uint64_t seen[2] = {0, 0};
    struct field f;
    int r = 0;

    mt = push(&m->ctr.mounts, &m->ctr.nmounts, sizeof(*mt), WISP_AGENT_MOUNTS_MAX, outer->tag, err);
    if (!mt)
        return -err->errnum;
    while (c.left && r == 0) {
        if ((r = next_field(&c, &f, err)) < 0)
            break;
        if (f.tag != WT_OPTION && (r = once(seen, &f, err)) < 0)
            break;
        if (f.tag == WT_MOUNT_TYPE)
            r = get_str(&f, WISP_AGENT_SHORT_MAX, &mt->type, err);
        else if (f.tag == WT_SOURCE)
            r = get_str(&f, WISP_AGENT_PATH_MAX, &mt->source, err);
        else if (f.tag == WT_DESTINATION)
            r = get_str(&f, WISP_AGENT_PATH_MAX, &mt->destination, err);
        else if (f.tag == WT_OPTION)
            r = push_str(&f, (const char ***)&mt->options, &mt->noptions, WISP_AGENT_OPTIONS_MAX,
                         WISP_AGENT_SHORT_MAX, err);
    }
    return r;
}

static int decode_file(const struct field *outer, struct wa_msg *m, struct wisp_err *err)
{
    struct cursor c = {outer->val, outer->len};
    struct wisp_agent_file *file;
    uint64_t seen[2] = {0, 0};
    struct field f;
    int r = 0;

    file =
        push(&m->ctr.files, &m->ctr.nfiles, sizeof(*file), WISP_AGENT_FILES_MAX, outer->tag, err);
    if (!file)
        return -err->errnum;
    file->mode = 0644;
    while (c.left && r == 0) {
        if ((r = next_field(&c, &f, err)) < 0 || (r = once(seen, &f, err)) < 0)
            break;
        if (f.tag == WT_PATH) {
            r = get_str(&f, WISP_AGENT_PATH_MAX, &file->path, err);
        } else if (f.tag == WT_DATA) {
            if (f.len > WISP_AGENT_FILE_MAX)
                r = wisp_err_set(err, EPROTO, "a file of %u bytes (at most %u)", f.len,
                                 WISP_AGENT_FILE_MAX);
            file->data = f.val;
            file->len = f.len;
        } else if (f.tag == WT_MODE) {
            r = get_u32(&f, &file->mode, err);
        }
    }
    return r;
}

static int decode_iface(const struct field *outer, struct wa_msg *m, struct wisp_err *err)
{
    struct cursor c = {outer->val, outer->len};
    struct wisp_agent_iface *ifc;
    uint64_t seen[2] = {0, 0};
    struct field f;
    int r = 0;

    ifc =
        push(&m->net.ifaces, &m->net.nifaces, sizeof(*ifc), WISP_AGENT_IFACES_MAX, outer->tag, err);
    if (!ifc)
        return -err->errnum;
    while (c.left && r == 0) {
        if ((r = next_field(&c, &f, err)) < 0)
            break;
        if (f.tag != WT_ADDRESS && (r = once(seen, &f, err)) < 0)
            break;
        if (f.tag == WT_IFNAME)
            r = get_str(&f, 15, &ifc->name, err);
        else if (f.tag == WT_MTU)
            r = get_u32(&f, &ifc->mtu, err);
        else if (f.tag == WT_UP)
            r = get_bool(&f, &ifc->up, err);
        else if (f.tag == WT_ADDRESS)
            r = push_str(&f, (const char ***)&ifc->addresses, &ifc->naddresses,
                         WISP_AGENT_ADDRS_MAX, 64, err);
    }
    return r;
}

static int decode_route(const struct field *outer, struct wa_msg *m, struct wisp_err *err)
{
    struct cursor c = {outer->val, outer->len};
    struct wisp_agent_route *rt;
    uint64_t seen[2] = {0, 0};
    struct field f;
    int r = 0;

    rt = push(&m->net.routes, &m->net.nroutes, sizeof(*rt), WISP_AGENT_ROUTES_MAX, outer->tag, err);
    if (!rt)
        return -err->errnum;
    while (c.left && r == 0) {
        if ((r = next_field(&c, &f, err)) < 0 || (r = once(seen, &f, err)) < 0)
            break;
        if (f.tag == WT_DESTINATION)
            r = get_str(&f, 64, &rt->destination, err);
        else if (f.tag == WT_GATEWAY)
            r = get_str(&f, 64, &rt->gateway, err);
        else if (f.tag == WT_IFNAME)
            r = get_str(&f, 15, &rt->device, err);
    }
    return r;
}

static int decode_proc(const struct field *outer, struct wa_msg *m, struct wisp_err *err)
{
    struct cursor c = {outer->val, outer->len};
    struct wisp_agent_ps_entry *e;
    uint64_t seen[2] = {0, 0};
    struct field f;
    int r = 0;

    e = push(&m->procs, &m->nprocs, sizeof(*e), WISP_AGENT_PROCS_MAX, outer->tag, err);
    if (!e)
        return -err->errnum;
    while (c.left && r == 0) {
        if ((r = next_field(&c, &f, err)) < 0 || (r = once(seen, &f, err)) < 0)
            break;
        if (f.tag == WT_PID)
            r = get_u32(&f, &e->pid, err);
        else if (f.tag == WT_PPID)
            r = get_u32(&f, &e->ppid, err);
        else if (f.tag == WT_UID)
            r = get_u32(&f, &e->uid, err);
        else if (f.tag == WT_STATE)
            r = get_str(&f, WISP_AGENT_SHORT_MAX, &e->state, err);
        else if (f.tag == WT_CMD)
            r = get_str(&f, WISP_AGENT_CMD_MAX, &e->cmd, err);
        else if (f.tag == WT_EXEC_ID)
            r = get_str(&f, WISP_AGENT_ID_MAX, &e->exec_id, err);
    }
    if (r == 0 && !(seen[0] & (1ull << WT_PID)))
        r = wisp_err_set(err, EPROTO, "a process entry without its pid");
    return r;
}

/* Top-level process fields. Returns 1 when the tag is not one of them. */
static int decode_process_field(const struct field *f, struct wa_msg *m, struct wisp_err *err)
{
    struct wisp_agent_process *p = &m->process;
    uint32_t v = 0;
    int r;

    switch (f->tag) {
    case WT_ARG:
        return push_str(f, &p->args, &p->nargs, WISP_AGENT_ARGS_MAX, WISP_AGENT_ARG_MAX, err);
    case WT_ENV:
        return push_str(f, &p->env, &p->nenv, WISP_AGENT_ARGS_MAX, WISP_AGENT_ARG_MAX, err);
    case WT_CWD:
        return get_str(f, WISP_AGENT_PATH_MAX, &p->cwd, err);
    case WT_UID:
        return get_u32(f, &p->uid, err);
    case WT_GID:
        return get_u32(f, &p->gid, err);
    case WT_GROUP: {
        uint32_t *g;

        if ((r = get_u32(f, &v, err)) < 0)
            return r;
        g = push(&p->additional_gids, &p->ngids, sizeof(*g), WISP_AGENT_GROUPS_MAX, f->tag, err);
        if (!g)
            return -err->errnum;
        *g = v;
        return 0;
    }
    case WT_UMASK:
        p->has_umask = true;
        return get_u32(f, &p->umask, err);
    case WT_RLIMIT:
        return decode_rlimit(f, m, err);
    case WT_NO_NEW_PRIVS:
        return get_bool(f, &p->no_new_privileges, err);
    case WT_TERMINAL:
        return get_bool(f, &p->terminal, err);
    case WT_ROWS:
    case WT_COLS:
        if ((r = get_u32(f, &v, err)) < 0)
            return r;
        if (v > 65535)
            return wisp_err_set(err, EPROTO, "a terminal size of %u (at most 65535)", v);
        *(f->tag == WT_ROWS ? &p->rows : &p->cols) = (uint16_t)v;
        return 0;
    case WT_STDIN:
    case WT_STDOUT:
    case WT_STDERR:
        return get_u32(f, &p->stdio[f->tag - WT_STDIN], err);
    }
    return 1;
}

static int decode_container_field(const struct field *f, struct wa_msg *m, struct wisp_err *err)
{
    struct wisp_agent_container *c = &m->ctr;

    switch (f->tag) {
    case WT_ROOTFS_TAG:
        return get_str(f, WISP_AGENT_SHORT_MAX, &c->rootfs_tag, err);
    case WT_ROOTFS_PATH:
        return get_str(f, WISP_AGENT_PATH_MAX, &c->rootfs_path, err);
    case WT_READONLY:
        return get_bool(f, &c->rootfs_readonly, err);
    case WT_HOSTNAME:
        return get_str(f, 64, &c->hostname, err);
    case WT_MOUNT:
        return decode_mount(f, m, err);
    case WT_FILE:
        return decode_file(f, m, err);
    case WT_DEFAULT_DEVICES:
        return get_bool(f, &c->default_devices, err);
    case WT_SEED:
        if (f->len < WISP_AGENT_SEED_MIN || f->len > WISP_AGENT_SEED_MAX)
            return wisp_err_set(err, EPROTO, "a seed of %u bytes (%u to %u)", f->len,
                                WISP_AGENT_SEED_MIN, WISP_AGENT_SEED_MAX);
        c->seed = f->val;
        c->seed_len = f->len;
        return 0;
    case WT_IFACE:
        return decode_iface(f, m, err);
    case WT_ROUTE:
        return decode_route(f, m, err);
    case WT_RESOLV_CONF:
        return get_str(f, WISP_AGENT_FILE_MAX, &m->net.resolv_conf, err);
    }
    return 1;
}

static bool repeated(uint16_t tag)
{
    switch (tag) {
    case WT_ARG:
    case WT_ENV:
    case WT_GROUP:
    case WT_RLIMIT:
    case WT_MOUNT:
    case WT_FILE:
    case WT_IFACE:
    case WT_ROUTE:
    case WT_PROC:
        return true;
    }
    return false;
}

static int decode_field(const struct field *f, struct wa_msg *m, struct wisp_err *err)
{
    int r;

    if (!repeated(f->tag) && f->tag <= WT_TAG_MAX && wa_has(m, f->tag))
        return wisp_err_set(err, EPROTO, "field %u given twice", f->tag);
    if (f->tag <= WT_TAG_MAX)
        wa_set(m, f->tag);
    if ((r = decode_process_field(f, m, err)) <= 0)
        return r;
    if ((r = decode_container_field(f, m, err)) <= 0)
        return r;
    switch (f->tag) {
    case WT_VERSION:
        return get_u32(f, &m->version, err);
    case WT_NAME:
        return get_str(f, WISP_AGENT_SHORT_MAX, &m->name, err);
    case WT_ERRNO:
        return get_u32(f, &m->errnum, err);
    case WT_MESSAGE:
        return get_str(f, 1024, &m->message, err);
    case WT_CONTAINER:
        return get_str(f, WISP_AGENT_ID_MAX, &m->container, err);
    case WT_EXEC_ID:
        return get_str(f, WISP_AGENT_ID_MAX, &m->exec_id, err);
    case WT_PID:
        return get_u32(f, &m->pid, err);
    case WT_SIGNAL:
        return get_u32(f, &m->signo, err);
    case WT_ALL:
        return get_bool(f, &m->all, err);
    case WT_STATUS:
        return get_u32(f, &m->status, err);
    case WT_STREAM:
        return get_u32(f, &m->stream, err);
    case WT_TIMEOUT_MS:
        return get_u32(f, &m->timeout_ms, err);
    case WT_PROC:
        return decode_proc(f, m, err);
    }
    return 0; /* unknown: skipped (a newer peer's optional field) */
}

void wa_msg_free(struct wa_msg *m)
{
    free(m->process.args);
    free(m->process.env);
    free((void *)m->process.additional_gids);
    free((void *)m->process.rlimits);
    for (size_t i = 0; i < m->ctr.nmounts; i++)
        free(m->ctr.mounts[i].options);
    free((void *)m->ctr.mounts);
    free((void *)m->ctr.files);
    for (size_t i = 0; i < m->net.nifaces; i++)
        free(m->net.ifaces[i].addresses);
    free((void *)m->net.ifaces);
    free((void *)m->net.routes);
    free(m->procs);
    memset(&m->process, 0, sizeof(m->process));
    memset(&m->ctr, 0, sizeof(m->ctr));
    memset(&m->net, 0, sizeof(m->net));
    m->procs = NULL;
    m->nprocs = 0;
}

int wa_decode(uint16_t type, uint32_t id, const uint8_t *payload, size_t len, struct wa_msg *m,
              struct wisp_err *err)
{
    struct cursor c = {payload, len};
    struct wisp_err local;
    struct field f;
    int r = 0;

    if (!err) /* the decoders read err->errnum back */
        err = &local;
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->id = id;
    while (c.left && r == 0) {
        if ((r = next_field(&c, &f, err)) == 0)
            r = decode_field(&f, m, err);
    }
    if (r == 0)
        r = wa_msg_check(m, err);
    if (r < 0) {
        wa_msg_free(m);
        return wisp_err_wrap(err, "%s%s", wa_type_name(type),
                             (type & WA_RESPONSE) ? " answer" : "");
    }
    return 0;
}

bool wa_id_valid(const char *id, bool may_be_empty)
{
    size_t n = id ? strlen(id) : 0;

    if (!id || n > WISP_AGENT_ID_MAX || (n == 0 && !may_be_empty))
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];

        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '+' || ch == '-'))
            return false;
    }
    return !(n == 1 && id[0] == '.') && !(n == 2 && id[0] == '.' && id[1] == '.');
}

static const struct {
    const char *name;
    int resource;
} rlimit_names[] = {
    {"RLIMIT_CPU", RLIMIT_CPU},           {"RLIMIT_FSIZE", RLIMIT_FSIZE},
    {"RLIMIT_DATA", RLIMIT_DATA},         {"RLIMIT_STACK", RLIMIT_STACK},
    {"RLIMIT_CORE", RLIMIT_CORE},         {"RLIMIT_RSS", RLIMIT_RSS},
    {"RLIMIT_NPROC", RLIMIT_NPROC},       {"RLIMIT_NOFILE", RLIMIT_NOFILE},
    {"RLIMIT_MEMLOCK", RLIMIT_MEMLOCK},   {"RLIMIT_AS", RLIMIT_AS},
    {"RLIMIT_LOCKS", RLIMIT_LOCKS},       {"RLIMIT_SIGPENDING", RLIMIT_SIGPENDING},
    {"RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE}, {"RLIMIT_NICE", RLIMIT_NICE},
    {"RLIMIT_RTPRIO", RLIMIT_RTPRIO},     {"RLIMIT_RTTIME", RLIMIT_RTTIME},
};

int wa_rlimit_from_name(const char *name)
{
    for (size_t i = 0; name && i < sizeof(rlimit_names) / sizeof(rlimit_names[0]); i++)
        if (strcmp(name, rlimit_names[i].name) == 0)
            return rlimit_names[i].resource;
    return -1;
}
