/* msgpack for the wire protocol: a writer on msgpack-c's packer into a
 * struct buf, and a bounded pull reader that never allocates and checks every
 * declared length against the bytes that remain before trusting it. */
#ifndef KAPPA_COMMON_MP_H
#define KAPPA_COMMON_MP_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Nesting limit for mp_skip (and so for any message). */
#define MP_DEPTH_MAX 32

enum mp_type {
    MP_INVALID = 0,
    MP_NIL,
    MP_BOOL,
    MP_UINT,
    MP_INT, /* negative */
    MP_FLOAT,
    MP_STR,
    MP_BIN,
    MP_ARRAY,
    MP_MAP,
    MP_EXT,
};

/* Writer. Errors (out of memory) are sticky in w->err; check it once at the
 * end. */
struct mp_writer {
    msgpack_packer pk;
    struct buf *out;
    int err;
};

void mp_writer_init(struct mp_writer *w, struct buf *out);
void mp_put_nil(struct mp_writer *w);
void mp_put_bool(struct mp_writer *w, int v);
void mp_put_int(struct mp_writer *w, int64_t v);
void mp_put_uint(struct mp_writer *w, uint64_t v);
void mp_put_str(struct mp_writer *w, const char *s);
void mp_put_strn(struct mp_writer *w, const char *s, size_t n);
void mp_put_bin(struct mp_writer *w, const void *p, size_t n);
/* Writes only the bin header; the caller then appends exactly n raw bytes to
 * w->out (lets a reader pread straight into the frame). */
void mp_put_bin_header(struct mp_writer *w, size_t n);
void mp_put_array(struct mp_writer *w, uint32_t n);
void mp_put_map(struct mp_writer *w, uint32_t n);

/* Reader over [p, end). Every call returns 0 or KAPPA_EPROTO; after the
 * first error the reader stays failed. Strings and bins are borrowed from
 * the input. */
struct mp_reader {
    const uint8_t *p;
    const uint8_t *end;
    int err;
};

void mp_reader_init(struct mp_reader *r, const void *p, size_t n);

/* Inline: it is on every value read (11% of a stream replay when it was a
 * call). */
static inline enum mp_type mp_peek(const struct mp_reader *r)
{
    uint8_t b;
    if (r->err != 0 || r->p >= r->end) {
        return MP_INVALID;
    }
    b = *r->p;
    if (b <= 0x7f || b == 0xcc || b == 0xcd || b == 0xce || b == 0xcf) {
        return MP_UINT;
    }
    if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3)) {
        return MP_INT;
    }
    if ((b & 0xe0) == 0xa0 || (b >= 0xd9 && b <= 0xdb)) {
        return MP_STR;
    }
    if ((b & 0xf0) == 0x90 || b == 0xdc || b == 0xdd) {
        return MP_ARRAY;
    }
    if ((b & 0xf0) == 0x80 || b == 0xde || b == 0xdf) {
        return MP_MAP;
    }
    switch (b) {
    case 0xc0:
        return MP_NIL;
    case 0xc2:
    case 0xc3:
        return MP_BOOL;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return MP_BIN;
    case 0xca:
    case 0xcb:
        return MP_FLOAT;
    case 0xc7:
    case 0xc8:
    case 0xc9:
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return MP_EXT;
    default:
        return MP_INVALID; /* 0xc1 is never used */
    }
}

int mp_read_nil(struct mp_reader *r);
int mp_read_bool(struct mp_reader *r, int *v);
int mp_read_int(struct mp_reader *r, int64_t *v);
int mp_read_uint(struct mp_reader *r, uint64_t *v);
int mp_read_str(struct mp_reader *r, const char **s, uint32_t *len);
int mp_read_bin(struct mp_reader *r, const uint8_t **p, uint32_t *len);
/* Container headers: n is checked against the bytes left (each element
 * takes at least one byte). */
int mp_read_array(struct mp_reader *r, uint32_t *n);
int mp_read_map(struct mp_reader *r, uint32_t *n);
/* Skips one value of any type, nested at most MP_DEPTH_MAX deep. */
int mp_skip(struct mp_reader *r);
/* Reads a map key and compares it with a C string. */
int mp_key_is(const char *key, uint32_t key_len, const char *name);

/* Reads an integer and checks lo <= v <= hi. */
int mp_read_int_range(struct mp_reader *r, int64_t lo, int64_t hi, int64_t *v);
/* Reads a string into dst (NUL-terminated), failing if it has cap or more
 * bytes or contains a NUL. */
int mp_read_cstr(struct mp_reader *r, char *dst, size_t cap);

#endif /* KAPPA_COMMON_MP_H */
