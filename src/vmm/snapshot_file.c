/* The snapshot state file (docs/snapshot.md, "The state file"): a header with magic and format
 * version, tagged sections, and a CRC-32 of everything before it. Reading checks all of that
 * before anything looks inside a section; every error names the file. */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common/cleanup.h"
#include "common/io.h"
#include "vmm/snapshot_int.h"

const char *snapshot_tag_name(uint32_t tag, char buf[5])
{
    for (int i = 0; i < 4; i++) {
        char c = (char)(tag >> (8 * i));
        buf[i] = c >= 0x21 && c <= 0x7e ? c : '?';
    }
    buf[4] = '\0';
    return buf;
}

static uint32_t le32_at(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

static uint64_t le64_at(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

static bool tag_known(uint32_t tag)
{
    return tag == SNAP_TAG_CONFIG || tag == SNAP_TAG_MEMORY || tag == SNAP_TAG_VM ||
           tag == SNAP_TAG_VCPU || tag == SNAP_TAG_DEVICE || tag == SNAP_TAG_DEVOPT ||
           tag == SNAP_TAG_INFO;
}

/* The sections between the header and the checksum: each header and body inside the file, no
 * byte left over, unknown tags only when optional. */
static int parse_sections(struct snapshot_image *img, size_t end, uint32_t count, const char *path,
                          struct wisp_err *err)
{
    img->sections = calloc(count ? count : 1, sizeof(*img->sections));
    if (!img->sections)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", path);
    size_t at = SNAPSHOT_HEADER_LEN;
    for (uint32_t i = 0; i < count; i++) {
        if (end - at < SNAPSHOT_SECTION_HDR)
            return wisp_err_set(err, EINVAL, "%s: section %u of %u is cut off at byte %zu", path,
                                i + 1, count, at);
        struct snapshot_section *s = &img->sections[img->nr_sections];
        s->tag = le32_at(img->buf + at);
        s->flags = le32_at(img->buf + at + 4);
        uint64_t len = le64_at(img->buf + at + 8);
        char name[5];
        if (len > end - at - SNAPSHOT_SECTION_HDR)
            return wisp_err_set(err, EINVAL,
                                "%s: section '%s' at byte %zu says %llu bytes, more than the file "
                                "holds",
                                path, snapshot_tag_name(s->tag, name), at, (unsigned long long)len);
        s->data = img->buf + at + SNAPSHOT_SECTION_HDR;
        s->len = (size_t)len;
        s->offset = at + SNAPSHOT_SECTION_HDR;
        at += SNAPSHOT_SECTION_HDR + s->len;
        if (s->flags & ~SNAP_SECTION_OPTIONAL)
            return wisp_err_set(err, EINVAL, "%s: section '%s' has unknown flags 0x%x", path,
                                snapshot_tag_name(s->tag, name), s->flags);
        if (!tag_known(s->tag)) {
            if (s->flags & SNAP_SECTION_OPTIONAL)
                continue; /* a later version's extra: skipped */
            return wisp_err_set(err, EINVAL,
                                "%s: unknown section '%s' at byte %zu (not optional: written by "
                                "a newer wisp?)",
                                path, snapshot_tag_name(s->tag, name), s->offset);
        }
        img->nr_sections++;
    }
    if (at != end)
        return wisp_err_set(err, EINVAL, "%s: %zu bytes after the last section", path, end - at);
    return 0;
}

static int parse(struct snapshot_image *img, const char *path, struct wisp_err *err)
{
    const size_t min = SNAPSHOT_HEADER_LEN + 4;
    if (img->len < 8 || memcmp(img->buf, SNAPSHOT_MAGIC, 8))
        return wisp_err_set(err, EINVAL, "%s: not a wisp snapshot (bad magic)", path);
    if (img->len < min)
        return wisp_err_set(err, EINVAL, "%s: truncated (%zu bytes, less than a header)", path,
                            img->len);
    img->version = le32_at(img->buf + 8);
    if (img->version == 0 || img->version > SNAPSHOT_VERSION)
        return wisp_err_set(
            err, EINVAL, "%s: format version %u: this wisp-vmm reads versions 1 to %u%s", path,
            img->version, SNAPSHOT_VERSION, img->version ? " (written by a newer wisp)" : "");
    size_t end = img->len - 4;
    uint32_t want = le32_at(img->buf + end);
    uint32_t crc = (uint32_t)crc32(0L, img->buf, (uInt)end);
    if (crc != want)
        return wisp_err_set(err, EINVAL,
                            "%s: checksum mismatch (CRC-32 0x%08x, the file says 0x%08x): the "
                            "file is damaged or truncated",
                            path, crc, want);
    uint32_t count = le32_at(img->buf + 12);
    if (count > SNAPSHOT_MAX_SECTIONS)
        return wisp_err_set(err, EINVAL, "%s: %u sections (at most %u)", path, count,
                            SNAPSHOT_MAX_SECTIONS);
    return parse_sections(img, end, count, path, err);
}

int snapshot_image_parse(struct snapshot_image *img, uint8_t *buf, size_t len, const char *path,
                         struct wisp_err *err)
{
    *img = (struct snapshot_image){.buf = buf, .len = len};
    if (len > SNAPSHOT_MAX_FILE) {
        snapshot_image_free(img);
        return wisp_err_set(err, EFBIG, "%s: %zu bytes, more than a state file holds (%u MiB)",
                            path, len, SNAPSHOT_MAX_FILE >> 20);
    }
    int r = parse(img, path, err);
    if (r < 0)
        snapshot_image_free(img);
    return r;
}

int snapshot_image_read(struct snapshot_image *img, const char *path, struct wisp_err *err)
{
    *img = (struct snapshot_image){0};
    off_t size;
    cleanup_close int fd = wisp_open_regular("snapshot_path", path, &size, err);
    if (fd < 0)
        return fd;
    if ((uint64_t)size > SNAPSHOT_MAX_FILE)
        return wisp_err_set(err, EFBIG, "%s: %lld bytes, more than a state file holds (%u MiB)",
                            path, (long long)size, SNAPSHOT_MAX_FILE >> 20);
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    if (!buf)
        return wisp_err_set(err, ENOMEM, "%s: out of memory", path);
    size_t got = 0;
    while (got < (size_t)size) {
        ssize_t n = read(fd, buf + got, (size_t)size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            free(buf);
            return wisp_err_sys(err, e, "%s: read", path);
        }
        got += (size_t)n;
    }
    return snapshot_image_parse(img, buf, got, path, err);
}

void snapshot_image_free(struct snapshot_image *img)
{
    free(img->buf);
    free(img->sections);
    *img = (struct snapshot_image){0};
}

const struct snapshot_section *snapshot_image_find(const struct snapshot_image *img, uint32_t tag,
                                                   unsigned nth)
{
    for (unsigned i = 0; i < img->nr_sections; i++)
        if (img->sections[i].tag == tag && nth-- == 0)
            return &img->sections[i];
    return NULL;
}

unsigned snapshot_image_count(const struct snapshot_image *img, uint32_t tag)
{
    unsigned n = 0;
    for (unsigned i = 0; i < img->nr_sections; i++)
        n += img->sections[i].tag == tag;
    return n;
}

void snapshot_file_begin(struct state_writer *w)
{
    state_put_bytes(w, SNAPSHOT_MAGIC, 8);
    state_put_u32(w, SNAPSHOT_VERSION);
    state_put_u32(w, 0); /* the number of sections, filled in by finish */
}

size_t snapshot_section_begin(struct state_writer *w, uint32_t tag, uint32_t flags)
{
    size_t at = w->len;
    state_put_u32(w, tag);
    state_put_u32(w, flags);
    state_put_u64(w, 0); /* the length, filled in by end */
    return at;
}

void snapshot_section_end(struct state_writer *w, size_t at)
{
    if (w->failed)
        return;
    uint64_t len = htole64(w->len - at - SNAPSHOT_SECTION_HDR);
    memcpy(w->buf + at + 8, &len, sizeof(len));
    uint32_t count = le32_at(w->buf + 12) + 1;
    count = htole32(count);
    memcpy(w->buf + 12, &count, sizeof(count));
}

void snapshot_file_finish(struct state_writer *w)
{
    if (w->failed)
        return;
    uint32_t crc = (uint32_t)crc32(0L, w->buf, (uInt)w->len);
    state_put_u32(w, crc);
}
