/* 9P message fields (little-endian, strings as len[2] bytes): every read checks what is left
 * of the request, every write what is left of the reply. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "virtio/p9_int.h"

static const uint8_t *take(struct p9_in *in, size_t n)
{
    if (in->bad || in->left < n) {
        in->bad = true;
        return NULL;
    }
    const uint8_t *p = in->p;
    in->p += n;
    in->left -= n;
    return p;
}

uint8_t p9_get8(struct p9_in *in)
{
    const uint8_t *p = take(in, 1);
    return p ? p[0] : 0;
}

uint16_t p9_get16(struct p9_in *in)
{
    uint16_t v = 0;
    const uint8_t *p = take(in, sizeof(v));
    if (p)
        memcpy(&v, p, sizeof(v));
    return le16toh(v);
}

uint32_t p9_get32(struct p9_in *in)
{
    uint32_t v = 0;
    const uint8_t *p = take(in, sizeof(v));
    if (p)
        memcpy(&v, p, sizeof(v));
    return le32toh(v);
}

uint64_t p9_get64(struct p9_in *in)
{
    uint64_t v = 0;
    const uint8_t *p = take(in, sizeof(v));
    if (p)
        memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

const char *p9_getstr(struct p9_in *in, uint16_t *len)
{
    *len = p9_get16(in);
    const uint8_t *p = take(in, *len);
    if (!p)
        *len = 0;
    return (const char *)p;
}

int p9_check_name(const char *s, size_t len, char name[256])
{
    if (len > 255)
        return -ENAMETOOLONG;
    if (len == 0 || memchr(s, '/', len) || memchr(s, '\0', len))
        return -EINVAL;
    if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.'))
        return -EINVAL;
    memcpy(name, s, len);
    name[len] = '\0';
    return 0;
}

int p9_getname(struct p9_in *in, char name[256])
{
    uint16_t len;
    const char *s = p9_getstr(in, &len);
    return s ? p9_check_name(s, len, name) : -EINVAL;
}

const uint8_t *p9_getbytes(struct p9_in *in, size_t n)
{
    return take(in, n);
}

uint8_t *p9_reserve(struct p9_out *o, size_t n)
{
    if (o->full || o->cap - o->len < n) {
        o->full = true;
        return NULL;
    }
    uint8_t *p = o->p + o->len;
    o->len += n;
    return p;
}

static void put(struct p9_out *o, const void *v, size_t n)
{
    uint8_t *p = p9_reserve(o, n);
    if (p)
        memcpy(p, v, n);
}

void p9_put8(struct p9_out *o, uint8_t v)
{
    put(o, &v, 1);
}

void p9_put16(struct p9_out *o, uint16_t v)
{
    v = htole16(v);
    put(o, &v, sizeof(v));
}

void p9_put32(struct p9_out *o, uint32_t v)
{
    v = htole32(v);
    put(o, &v, sizeof(v));
}

void p9_put64(struct p9_out *o, uint64_t v)
{
    v = htole64(v);
    put(o, &v, sizeof(v));
}

void p9_putstr(struct p9_out *o, const char *s, size_t len)
{
    if (len > UINT16_MAX) {
        o->full = true;
        return;
    }
    p9_put16(o, (uint16_t)len);
    put(o, s, len);
}

uint8_t p9_qid_type(mode_t mode)
{
    if (S_ISDIR(mode))
        return P9_QTDIR;
    if (S_ISLNK(mode))
        return P9_QTSYMLINK;
    return P9_QTFILE;
}

/* qid: type[1] version[4] path[8]; the path is the inode number (docs/9p.md, limits). */
void p9_putqid(struct p9_out *o, const struct stat *st)
{
    p9_put8(o, p9_qid_type(st->st_mode));
    p9_put32(o, 0);
    p9_put64(o, (uint64_t)st->st_ino);
}
