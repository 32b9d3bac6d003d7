#include "mp.h"

#include <string.h>

#include "endian.h"
#include "err.h"

static int packer_write(void *data, const char *p, size_t n)
{
    struct mp_writer *w = data;
    if (w->err == 0 && buf_append(w->out, p, n) != 0) {
        w->err = KAPPA_ENOMEM;
    }
    return w->err == 0 ? 0 : -1;
}

void mp_writer_init(struct mp_writer *w, struct buf *out)
{
    w->out = out;
    w->err = 0;
    msgpack_packer_init(&w->pk, w, packer_write);
}

void mp_put_nil(struct mp_writer *w)
{
    msgpack_pack_nil(&w->pk);
}

void mp_put_bool(struct mp_writer *w, int v)
{
    if (v) {
        msgpack_pack_true(&w->pk);
    } else {
        msgpack_pack_false(&w->pk);
    }
}

void mp_put_int(struct mp_writer *w, int64_t v)
{
    msgpack_pack_int64(&w->pk, v);
}

void mp_put_uint(struct mp_writer *w, uint64_t v)
{
    msgpack_pack_uint64(&w->pk, v);
}

void mp_put_str(struct mp_writer *w, const char *s)
{
    mp_put_strn(w, s, strlen(s));
}

void mp_put_strn(struct mp_writer *w, const char *s, size_t n)
{
    msgpack_pack_str(&w->pk, n);
    msgpack_pack_str_body(&w->pk, s, n);
}

void mp_put_bin(struct mp_writer *w, const void *p, size_t n)
{
    msgpack_pack_bin(&w->pk, n);
    msgpack_pack_bin_body(&w->pk, p, n);
}

void mp_put_bin_header(struct mp_writer *w, size_t n)
{
    msgpack_pack_bin(&w->pk, n);
}

void mp_put_array(struct mp_writer *w, uint32_t n)
{
    msgpack_pack_array(&w->pk, n);
}

void mp_put_map(struct mp_writer *w, uint32_t n)
{
    msgpack_pack_map(&w->pk, n);
}

void mp_reader_init(struct mp_reader *r, const void *p, size_t n)
{
    r->p = p;
    r->end = r->p + n;
    r->err = 0;
}

static int fail(struct mp_reader *r)
{
    r->err = KAPPA_EPROTO;
    return KAPPA_EPROTO;
}

static size_t left(const struct mp_reader *r)
{
    return (size_t)(r->end - r->p);
}

/* Reads a big-endian unsigned of `width` bytes after the tag byte. */
static int read_be(struct mp_reader *r, unsigned width, uint64_t *v)
{
    uint64_t x = 0;
    if (left(r) < 1 + (size_t)width) {
        return fail(r);
    }
    for (unsigned i = 0; i < width; i++) {
        x = (x << 8) | r->p[1 + i];
    }
    r->p += 1 + width;
    *v = x;
    return 0;
}

int mp_read_nil(struct mp_reader *r)
{
    if (mp_peek(r) != MP_NIL) {
        return fail(r);
    }
    r->p++;
    return 0;
}

int mp_read_bool(struct mp_reader *r, int *v)
{
    if (mp_peek(r) != MP_BOOL) {
        return fail(r);
    }
    *v = *r->p++ == 0xc3;
    return 0;
}

int mp_read_uint(struct mp_reader *r, uint64_t *v)
{
    uint8_t b;
    if (mp_peek(r) != MP_UINT) {
        return fail(r);
    }
    b = *r->p;
    if (b <= 0x7f) {
        *v = b;
        r->p++;
        return 0;
    }
    return read_be(r, 1u << (b - 0xcc), v);
}

int mp_read_int(struct mp_reader *r, int64_t *v)
{
    uint64_t u;
    uint8_t b;
    enum mp_type t = mp_peek(r);

    if (t == MP_UINT) {
        if (mp_read_uint(r, &u) != 0 || u > INT64_MAX) {
            return fail(r);
        }
        *v = (int64_t)u;
        return 0;
    }
    if (t != MP_INT) {
        return fail(r);
    }
    b = *r->p;
    if (b >= 0xe0) {
        *v = (int8_t)b;
        r->p++;
        return 0;
    }
    unsigned width = 1u << (b - 0xd0);
    if (read_be(r, width, &u) != 0) {
        return KAPPA_EPROTO;
    }
    /* Sign-extend from width bytes. */
    if (width < 8 && (u >> (width * 8 - 1)) != 0) {
        u |= ~0ull << (width * 8);
    }
    *v = (int64_t)u;
    return 0;
}

/* Reads a length-prefixed header: tag in [fix_lo, fix_hi] with the length in
 * the low bits, or one of three tags with a 1/2/4 byte length. */
static int read_len(struct mp_reader *r, uint8_t tag8, uint32_t *len)
{
    uint8_t b = *r->p;
    uint64_t n;
    if (b == tag8 || b == tag8 + 1 || b == tag8 + 2) {
        if (read_be(r, 1u << (b - tag8), &n) != 0) {
            return KAPPA_EPROTO;
        }
        *len = (uint32_t)n;
        return 0;
    }
    return fail(r);
}

static int read_bytes(struct mp_reader *r, const uint8_t **p, uint32_t len)
{
    if (len > left(r)) {
        return fail(r);
    }
    *p = r->p;
    r->p += len;
    return 0;
}

int mp_read_str(struct mp_reader *r, const char **s, uint32_t *len)
{
    const uint8_t *p;
    if (mp_peek(r) != MP_STR) {
        return fail(r);
    }
    if ((*r->p & 0xe0) == 0xa0) {
        *len = *r->p++ & 0x1f;
    } else if (*r->p == 0xd9 || *r->p == 0xda || *r->p == 0xdb) {
        if (read_len(r, 0xd9, len) != 0) {
            return KAPPA_EPROTO;
        }
    }
    if (read_bytes(r, &p, *len) != 0) {
        return KAPPA_EPROTO;
    }
    *s = (const char *)p;
    return 0;
}

int mp_read_bin(struct mp_reader *r, const uint8_t **p, uint32_t *len)
{
    if (mp_peek(r) != MP_BIN || read_len(r, 0xc4, len) != 0) {
        return fail(r);
    }
    return read_bytes(r, p, *len);
}

static int read_container(struct mp_reader *r, enum mp_type type,
                          uint8_t fix_tag, uint8_t tag16, uint32_t *n)
{
    uint64_t v;
    uint8_t b;
    if (mp_peek(r) != type) {
        return fail(r);
    }
    b = *r->p;
    if ((b & 0xf0) == fix_tag) {
        *n = b & 0x0f;
        r->p++;
    } else if (read_be(r, b == tag16 ? 2 : 4, &v) == 0) {
        *n = (uint32_t)v;
    } else {
        return KAPPA_EPROTO;
    }
    return 0;
}

int mp_read_array(struct mp_reader *r, uint32_t *n)
{
    if (read_container(r, MP_ARRAY, 0x90, 0xdc, n) != 0 || *n > left(r)) {
        return fail(r);
    }
    return 0;
}

int mp_read_map(struct mp_reader *r, uint32_t *n)
{
    if (read_container(r, MP_MAP, 0x80, 0xde, n) != 0 ||
        (uint64_t)*n * 2 > left(r)) {
        return fail(r);
    }
    return 0;
}

static int skip_scalar(struct mp_reader *r, enum mp_type t)
{
    const char *s;
    const uint8_t *p;
    uint32_t len;
    int64_t i;
    uint64_t u;
    uint8_t b;

    /* MP_INVALID also means "at the end": there is no tag byte to look at. */
    if (t == MP_INVALID) {
        return fail(r);
    }
    b = *r->p;
    switch (t) {
    case MP_NIL:
    case MP_BOOL:
        r->p++;
        return 0;
    case MP_UINT:
        return mp_read_uint(r, &u);
    case MP_INT:
        return mp_read_int(r, &i);
    case MP_FLOAT:
        return read_bytes(r, &p, b == 0xca ? 5 : 9);
    case MP_STR:
        return mp_read_str(r, &s, &len);
    case MP_BIN:
        return mp_read_bin(r, &p, &len);
    case MP_EXT:
        if (b >= 0xd4 && b <= 0xd8) {
            return read_bytes(r, &p, 2 + (1u << (b - 0xd4)));
        }
        /* The type byte and the data are read separately: 1 + len would
         * wrap to 0 for len 2^32-1. */
        if (read_len(r, 0xc7, &len) != 0 || read_bytes(r, &p, 1) != 0) {
            return KAPPA_EPROTO;
        }
        return read_bytes(r, &p, len);
    default:
        return fail(r);
    }
}

/* Skips values iteratively: `pending[d]` counts the values still to skip at
 * nesting depth d, so hostile nesting cannot exhaust the C stack. */
int mp_skip(struct mp_reader *r)
{
    uint64_t pending[MP_DEPTH_MAX + 1];
    int depth = 0;
    pending[0] = 1;
    while (depth >= 0) {
        uint32_t n;
        enum mp_type t;
        if (pending[depth] == 0) {
            depth--;
            continue;
        }
        pending[depth]--;
        t = mp_peek(r);
        if (t == MP_ARRAY || t == MP_MAP) {
            if ((t == MP_ARRAY ? mp_read_array(r, &n) : mp_read_map(r, &n)) !=
                0) {
                return KAPPA_EPROTO;
            }
            if (depth == MP_DEPTH_MAX) {
                return fail(r);
            }
            pending[++depth] = t == MP_MAP ? (uint64_t)n * 2 : n;
        } else if (skip_scalar(r, t) != 0) {
            return fail(r);
        }
    }
    return 0;
}

int mp_key_is(const char *key, uint32_t key_len, const char *name)
{
    size_t n = strlen(name);
    return n == key_len && memcmp(key, name, n) == 0;
}

int mp_read_int_range(struct mp_reader *r, int64_t lo, int64_t hi, int64_t *v)
{
    if (mp_read_int(r, v) != 0 || *v < lo || *v > hi) {
        return fail(r);
    }
    return 0;
}

int mp_read_cstr(struct mp_reader *r, char *dst, size_t cap)
{
    const char *s;
    uint32_t len;
    if (mp_read_str(r, &s, &len) != 0 || len >= cap ||
        memchr(s, '\0', len) != NULL) {
        return fail(r);
    }
    memcpy(dst, s, len);
    dst[len] = '\0';
    return 0;
}
