/* qcow2 metadata map: which host clusters hold the header, the L1 table, L2 tables, the refcount
 * table and blocks, the snapshot table and snapshot L1/L2 tables (QEMU's "overlap check", kept
 * as cached ranges). Built at open, where every L1 and refcount table entry is validated; kept
 * up to date by the code that creates and drops metadata; used to refuse any host write that
 * would land on metadata of another kind (qcow2_io.c), to keep the allocator away from
 * metadata whose refcount is wrong, and to validate L2 entries where they are used. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/qcow2_int.h"
#include "common/cleanup.h"

/* First range ending after cluster c. */
static size_t first_ending_after(const struct qcow2_meta_map *m, uint64_t c)
{
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->r[mid].end > c)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void piece_push(struct qcow2_meta_range *t, size_t *k, uint64_t a, uint64_t b,
                       unsigned kinds)
{
    if (a >= b || !kinds)
        return;
    if (*k && t[*k - 1].end == a && t[*k - 1].kinds == kinds) {
        t[*k - 1].end = b;
        return;
    }
    t[(*k)++] = (struct qcow2_meta_range){a, b, kinds};
}

/* Merges range j into j - 1 when they touch and hold the same kinds. */
static void merge_at(struct qcow2_meta_map *m, size_t j)
{
    if (j == 0 || j >= m->n || m->r[j - 1].end != m->r[j].start ||
        m->r[j - 1].kinds != m->r[j].kinds)
        return;
    m->r[j - 1].end = m->r[j].end;
    memmove(&m->r[j], &m->r[j + 1], (m->n - j - 1) * sizeof(*m->r));
    m->n--;
}

int qcow2_meta_update(struct qcow2_state *s, uint64_t off, uint64_t len, unsigned add, unsigned del)
{
    if (!len)
        return 0;
    struct qcow2_meta_map *m = &s->meta;
    uint64_t c0 = off >> s->cluster_bits, c1 = ((off + len - 1) >> s->cluster_bits) + 1;
    size_t i0 = first_ending_after(m, c0), i1 = i0;
    while (i1 < m->n && m->r[i1].start < c1)
        i1++;
    size_t cap = 2 * (i1 - i0) + 3, k = 0;
    struct qcow2_meta_range small[8];
    cleanup_free struct qcow2_meta_range *big = cap > 8 ? malloc(cap * sizeof(*big)) : NULL;
    struct qcow2_meta_range *t = cap > 8 ? big : small;
    if (!t)
        return -ENOMEM;
    if (i0 < i1 && m->r[i0].start < c0)
        piece_push(t, &k, m->r[i0].start, c0, m->r[i0].kinds);
    uint64_t pos = c0;
    for (size_t i = i0; i < i1; i++) {
        uint64_t a = m->r[i].start > c0 ? m->r[i].start : c0;
        uint64_t b = m->r[i].end < c1 ? m->r[i].end : c1;
        piece_push(t, &k, pos, a, add & ~del);
        piece_push(t, &k, a, b, (m->r[i].kinds | add) & ~del);
        pos = b;
    }
    piece_push(t, &k, pos, c1, add & ~del);
    if (i1 > i0 && m->r[i1 - 1].end > c1)
        piece_push(t, &k, c1, m->r[i1 - 1].end, m->r[i1 - 1].kinds);
    size_t n = m->n - (i1 - i0) + k;
    if (n > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        while (nc < n)
            nc *= 2;
        void *p = realloc(m->r, nc * sizeof(*m->r));
        if (!p)
            return -ENOMEM;
        m->r = p;
        m->cap = nc;
    }
    memmove(&m->r[i0 + k], &m->r[i1], (m->n - i1) * sizeof(*m->r));
    memcpy(&m->r[i0], t, k * sizeof(*t));
    m->n = n;
    merge_at(m, i0 + k);
    merge_at(m, i0);
    return 0;
}

unsigned qcow2_meta_kinds(const struct qcow2_state *s, uint64_t off, uint64_t len)
{
    if (!len)
        return 0;
    const struct qcow2_meta_map *m = &s->meta;
    uint64_t c0 = off >> s->cluster_bits, c1 = ((off + len - 1) >> s->cluster_bits) + 1;
    unsigned kinds = 0;
    for (size_t i = first_ending_after(m, c0); i < m->n && m->r[i].start < c1; i++)
        kinds |= m->r[i].kinds;
    return kinds;
}

bool qcow2_meta_is(const struct qcow2_state *s, uint64_t off, uint64_t len, unsigned kinds)
{
    if (!len)
        return true;
    const struct qcow2_meta_map *m = &s->meta;
    uint64_t c0 = off >> s->cluster_bits, c1 = ((off + len - 1) >> s->cluster_bits) + 1;
    uint64_t pos = c0;
    for (size_t i = first_ending_after(m, c0); i < m->n && m->r[i].start < c1; i++) {
        if (m->r[i].start > pos || (m->r[i].kinds & ~kinds))
            return false;
        pos = m->r[i].end;
    }
    return pos >= c1;
}

const char *qcow2_meta_name(unsigned kinds)
{
    static const char *const names[] = {
        "the header",       "the L1 table",       "an L2 table",         "the refcount table",
        "a refcount block", "the snapshot table", "a snapshot L1 table", "a snapshot's L2 table",
    };
    for (unsigned i = 0; i < ARRAY_SIZE(names); i++)
        if (kinds & (1u << i))
            return names[i];
    return "guest data";
}

void qcow2_meta_free(struct qcow2_state *s)
{
    free(s->meta.r);
    s->meta = (struct qcow2_meta_map){0};
}

/* End of the host space entries may point into: the file as opened, plus what we allocated. */
static uint64_t host_limit(const struct qcow2_state *s)
{
    return qcow2_align_up(s->host_end, s->cluster_size);
}

const char *qcow2_l2_table_problem(const struct qcow2_state *s, uint64_t l1e, unsigned kind,
                                   char *buf, size_t len)
{
    uint64_t off = l1e & QCOW2_OFFSET_MASK;
    if (l1e & QCOW2_L1E_RESERVED)
        return "has reserved bits set";
    if (off & (s->cluster_size - 1))
        snprintf(buf, len, "names L2 table offset 0x%" PRIx64 ", not aligned to a cluster", off);
    else if (off + s->cluster_size > host_limit(s))
        snprintf(buf, len, "names L2 table offset 0x%" PRIx64 ", outside the image file", off);
    else if (qcow2_meta_kinds(s, off, s->cluster_size) & ~(QCOW2_META_L2 | QCOW2_META_SNAP_L2))
        snprintf(buf, len, "names L2 table offset 0x%" PRIx64 ", which holds %s", off,
                 qcow2_meta_name(qcow2_meta_kinds(s, off, s->cluster_size) &
                                 ~(QCOW2_META_L2 | QCOW2_META_SNAP_L2)));
    else
        return NULL;
    (void)kind;
    return buf;
}

/* Data clusters (spec "Standard Cluster Descriptor"): cluster aligned, inside the file, and
 * not metadata (of the kinds not in `ignore`); compressed ranges inside the file (the last
 * sector may pass its end). */
static const char *host_cluster_problem(const struct qcow2_state *s, uint64_t e, unsigned ignore,
                                        char *buf, size_t len)
{
    uint64_t off, n;
    unsigned kinds;
    if (e & QCOW2_OFLAG_COMPRESSED) {
        qcow2_compressed_range(s, e, &off, &n);
        kinds = qcow2_meta_kinds(s, off, n) & ~ignore;
        if (off + n > qcow2_align_up(s->host_end, 512) || off < s->cluster_size)
            snprintf(buf, len,
                     "compressed data at host offset 0x%" PRIx64 " (+%" PRIu64
                     ") lies outside the image file",
                     off, n);
        else if (kinds)
            snprintf(buf, len, "compressed data at host offset 0x%" PRIx64 " holds metadata (%s)",
                     off, qcow2_meta_name(kinds));
        else
            return NULL;
        return buf;
    }
    off = e & QCOW2_OFFSET_MASK;
    if (!off)
        return NULL;
    kinds = qcow2_meta_kinds(s, off, s->cluster_size) & ~ignore;
    if (off & (s->cluster_size - 1))
        snprintf(buf, len, "host offset 0x%" PRIx64 " is not aligned to a cluster", off);
    else if (off + s->cluster_size > host_limit(s))
        snprintf(buf, len, "host offset 0x%" PRIx64 " lies outside the image file", off);
    else if (kinds)
        snprintf(buf, len, "host offset 0x%" PRIx64 ", which holds metadata (%s)", off,
                 qcow2_meta_name(kinds));
    else
        return NULL;
    return buf;
}

const char *qcow2_entry_problem_except(const struct qcow2_state *s, uint64_t e, uint64_t bmp,
                                       unsigned ignore, char *buf, size_t len)
{
    if (!(e & QCOW2_OFLAG_COMPRESSED)) {
        if (e & QCOW2_L2E_RESERVED)
            return "reserved bits set";
        if ((s->version < 3 || s->extended_l2) && (e & QCOW2_OFLAG_ZERO))
            return "zero flag where the format has none";
    } else if (s->extended_l2 && bmp) {
        return "compressed cluster with a subcluster bitmap";
    }
    if (s->extended_l2 && !(e & QCOW2_OFLAG_COMPRESSED) &&
        (((bmp & (bmp >> 32) & 0xffffffffu) != 0) ||
         (!(e & QCOW2_OFFSET_MASK) && (bmp & 0xffffffffu))))
        return "invalid subcluster bitmap";
    return host_cluster_problem(s, e, ignore, buf, len);
}

const char *qcow2_l2_entry_problem(const struct qcow2_state *s, uint64_t e, uint64_t bmp, char *buf,
                                   size_t len)
{
    return qcow2_entry_problem_except(s, e, bmp, 0, buf, len);
}

/* Fails unless host bytes [off, off + len) are cluster aligned and inside the file. */
static int check_table_range(struct qcow2_state *s, uint64_t off, uint64_t len, const char *what,
                             struct wisp_err *err)
{
    if (off & (s->cluster_size - 1))
        return wisp_err_set(err, EINVAL,
                            "%s: %s at offset 0x%" PRIx64 " is not aligned to a cluster (%" PRIu64
                            " bytes)",
                            s->name, what, off, s->cluster_size);
    if (off == 0 || off + len < off || off + len > host_limit(s))
        return wisp_err_set(err, EINVAL,
                            "%s: %s at offset 0x%" PRIx64 " (length %" PRIu64
                            ") lies outside the image file (size %" PRIu64 ")",
                            s->name, what, off, len, s->host_end);
    return 0;
}

/* Adds a table of `kind` unless its clusters already hold something other than `may_share`;
 * a clash is an error (strict) or leaves the table out. */
static int add_table(struct qcow2_state *s, bool strict, uint64_t off, uint64_t len, unsigned kind,
                     unsigned may_share, const char *what, struct wisp_err *err)
{
    unsigned have = qcow2_meta_kinds(s, off, len);
    if (have & ~may_share) {
        if (!strict) /* left out: qcow2_check reports it */
            return 0;
        return wisp_err_set(err, EINVAL, "%s: %s overlaps %s", s->name, what,
                            qcow2_meta_name(have & ~may_share));
    }
    return qcow2_meta_update(s, off, len, kind, 0) < 0
               ? wisp_err_set(err, ENOMEM, "%s: metadata map", s->name)
               : 0;
}

/* The L2 tables an L1 table names (active: kind L2, a snapshot's: SNAP_L2). */
static int add_l2_tables(struct qcow2_state *s, bool strict, const uint64_t *l1, uint32_t n,
                         uint64_t l1_off, unsigned kind, struct wisp_err *err)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t e = l1[i], l2 = e & QCOW2_OFFSET_MASK;
        char what[96];
        if (e & QCOW2_L1E_RESERVED) {
            if (!strict)
                continue;
            return wisp_err_set(err, EINVAL,
                                "%s: L1 entry %u at offset 0x%" PRIx64 " has reserved bits set",
                                s->name, i, l1_off + (uint64_t)i * 8);
        }
        if (!l2)
            continue;
        snprintf(what, sizeof(what), "L2 table (L1 entry %u)", i);
        int ret = check_table_range(s, l2, s->cluster_size, what, err);
        if (ret < 0 && !strict)
            continue;
        if (ret < 0)
            return ret;
        /* an active table may be shared with snapshots, never named twice by the active L1 */
        snprintf(what, sizeof(what), "L2 table at offset 0x%" PRIx64 " (L1 entry %u)", l2, i);
        unsigned share = kind == QCOW2_META_L2 ? 0 : QCOW2_META_L2 | QCOW2_META_SNAP_L2;
        if ((ret = add_table(s, strict, l2, s->cluster_size, kind, share, what, err)) < 0)
            return ret;
    }
    return 0;
}

static int add_snapshots(struct qcow2_state *s, bool strict, struct wisp_err *err)
{
    for (uint32_t k = 0; k < s->nb_snapshots; k++) {
        const struct qcow2_snapshot *sn = &s->snaps[k];
        if (!sn->l1_size)
            continue;
        cleanup_free uint64_t *l1 = calloc(sn->l1_size, 8);
        if (!l1)
            return wisp_err_sys(err, ENOMEM, "%s: snapshot L1 table", s->name);
        int ret = block_file_pread(s->file, sn->l1_table_offset, l1, (size_t)sn->l1_size * 8, err);
        if (ret < 0)
            return wisp_err_wrap(err, "%s: reading the L1 table of snapshot '%s'", s->name,
                                 sn->name);
        for (uint32_t i = 0; i < sn->l1_size; i++)
            l1[i] = be64toh(l1[i]);
        if ((ret = add_l2_tables(s, strict, l1, sn->l1_size, sn->l1_table_offset,
                                 QCOW2_META_SNAP_L2, err)) < 0)
            return wisp_err_wrap(err, "%s: snapshot '%s'", s->name, sn->name);
    }
    return 0;
}

/* Refcount blocks come last: a block that clashes with any other table is the one that is
 * wrong (the refcount structure can be rebuilt from the rest, qcow2_check). */
static int add_refcount_blocks(struct qcow2_state *s, bool strict, struct wisp_err *err)
{
    for (uint64_t i = 0; i < s->rt_entries; i++) {
        uint64_t rb = s->rt[i];
        char what[96];
        if (!rb)
            continue;
        snprintf(what, sizeof(what), "refcount block %" PRIu64, i);
        int ret = check_table_range(s, rb, s->cluster_size, what, err);
        if (ret < 0 && !strict)
            continue;
        if (ret < 0)
            return ret;
        snprintf(what, sizeof(what),
                 "refcount block at offset 0x%" PRIx64 " (refcount table entry %" PRIu64 ")", rb,
                 i);
        if ((ret = add_table(s, strict, rb, s->cluster_size, QCOW2_META_RB, 0, what, err)) < 0)
            return ret;
    }
    return 0;
}

/* Builds into s->meta (empty) from the tables. */
static int meta_build(struct qcow2_state *s, bool strict, struct wisp_err *err)
{
    uint64_t rt_len = (uint64_t)s->rt_clusters << s->cluster_bits;
    int ret = add_table(s, strict, 0, s->cluster_size, QCOW2_META_HEADER, 0, "header", err);
    if (ret == 0 && s->l1_size)
        ret = add_table(s, strict, s->l1_offset, (uint64_t)s->l1_size * 8, QCOW2_META_L1, 0,
                        "L1 table", err);
    if (ret == 0)
        ret = add_table(s, strict, s->rt_offset, rt_len, QCOW2_META_RT, 0, "refcount table", err);
    if (ret == 0 && s->nb_snapshots)
        ret = add_table(s, strict, s->snapshots_offset, s->snapshots_size, QCOW2_META_SNAP_TABLE, 0,
                        "snapshot table", err);
    for (uint32_t k = 0; ret == 0 && k < s->nb_snapshots; k++) {
        const struct qcow2_snapshot *sn = &s->snaps[k];
        char what[320];
        snprintf(what, sizeof(what), "L1 table of snapshot '%s' at offset 0x%" PRIx64, sn->name,
                 sn->l1_table_offset);
        /* two snapshots may share nothing but L2 tables and data */
        ret = add_table(s, strict, sn->l1_table_offset, (uint64_t)sn->l1_size * 8,
                        QCOW2_META_SNAP_L1, 0, what, err);
    }
    if (ret == 0)
        ret = add_l2_tables(s, strict, s->l1, s->l1_size, s->l1_offset, QCOW2_META_L2, err);
    if (ret == 0)
        ret = add_snapshots(s, strict, err);
    if (ret == 0)
        ret = add_refcount_blocks(s, strict, err);
    return ret < 0 ? ret : 0;
}

int qcow2_meta_build(struct qcow2_state *s, bool strict, struct wisp_err *err)
{
    struct qcow2_meta_map old = s->meta; /* kept when the new one cannot be built */
    s->meta = (struct qcow2_meta_map){0};
    int ret = meta_build(s, strict, err);
    if (ret < 0) {
        free(s->meta.r);
        s->meta = old;
        return ret;
    }
    free(old.r);
    return 0;
}
