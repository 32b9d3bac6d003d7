/* Field extraction from JSON and msgpack values.
 *
 * Values come from the log and are untrusted: every failure is a return
 * code, never an assertion. JSON goes through jansson (json_loadb with the
 * length, so a value needs no NUL), once per value however many fields are
 * asked for. msgpack is walked in place: the top-level map is scanned key by
 * key with mp_skip over the values not wanted, so nothing is copied or
 * allocated, and mp_skip bounds the nesting depth. */
#include "value.h"

#include <math.h>
#include <string.h>

#include "common/alloc.h"
#include "common/mp.h"

void value_doc_init(struct value_doc *d, enum kappa_stream_format format,
                    const void *data, size_t len)
{
    d->format = format;
    d->data = data;
    d->len = len;
    d->root = NULL;
    d->err = 0;
    d->in_arena = 0;
    d->parsed = 0;
    d->n_index = -1;
}

/* ---- The parse arena ------------------------------------------------------
 *
 * jansson allocates every object, key and string of a parse separately; at
 * hundreds of thousands of values per second that is most of the cost
 * after the parse itself. While one of our docs parses, jansson's
 * allocations come from a per-thread bump arena instead; frees of arena
 * memory are no-ops and the arena is reset when no arena doc is alive.
 * Anything else (other threads, the application's own jansson use,
 * allocations past the arena's end) goes to kappa_malloc/kappa_free, so
 * installing these functions is invisible to other jansson users. */
#define ARENA_BYTES (256u << 10)

struct arena {
    uint8_t *base;
    size_t used;
    int is_parsing;
    int n_live; /* docs whose tree lives in the arena */
};

static _Thread_local struct arena arena;

static void *arena_malloc(size_t size)
{
    size_t need = (size + 15) & ~(size_t)15;
    if (arena.is_parsing && arena.base != NULL && need >= size &&
        need <= ARENA_BYTES - arena.used) {
        void *p = arena.base + arena.used;
        arena.used += need;
        return p;
    }
    return kappa_malloc(size);
}

static void arena_free(void *p)
{
    const uint8_t *b = p;
    if (arena.base != NULL && b >= arena.base && b < arena.base + ARENA_BYTES) {
        return;
    }
    kappa_free(p);
}

static void arena_install(void)
{
    static int installed; /* same functions every time: a race is benign */
    if (!installed) {
        json_set_alloc_funcs(arena_malloc, arena_free);
        installed = 1;
    }
}

void value_doc_use_arena(struct value_doc *d)
{
    if (d->format != KAPPA_FORMAT_JSON) {
        return;
    }
    arena_install();
    if (arena.base == NULL) {
        arena.base = kappa_malloc(ARENA_BYTES);
    }
    d->in_arena = arena.base != NULL;
}

static json_t *parse(struct value_doc *d, json_error_t *jerr)
{
    json_t *root;
    if (!d->in_arena) {
        return json_loadb(d->data, d->len, JSON_ALLOW_NUL, jerr);
    }
    arena.is_parsing = 1;
    root = json_loadb(d->data, d->len, JSON_ALLOW_NUL, jerr);
    arena.is_parsing = 0;
    arena.n_live++;
    return root;
}

void value_doc_release(struct value_doc *d)
{
    if (d->root != NULL) {
        json_decref(d->root);
        d->root = NULL;
    }
    if (d->in_arena && d->parsed) {
        if (--arena.n_live == 0) {
            arena.used = 0;
        }
    }
    d->parsed = 0;
}

/* Splits the next component off a dotted path. */
static const char *next_component(const char *path, size_t *len)
{
    const char *dot = strchr(path, '.');
    *len = dot != NULL ? (size_t)(dot - path) : strlen(path);
    return dot != NULL ? dot + 1 : NULL;
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_to_field(const json_t *v, struct kappa_field *out)
{
    memset(out, 0, sizeof *out);
    switch (json_typeof(v)) {
    case JSON_NULL:
        out->type = KAPPA_FIELD_NULL;
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        out->type = KAPPA_FIELD_BOOL;
        out->i = json_is_true(v);
        out->d = (double)out->i;
        break;
    case JSON_INTEGER:
        out->type = KAPPA_FIELD_INT;
        out->i = (int64_t)json_integer_value(v);
        out->d = (double)out->i;
        break;
    case JSON_REAL:
        out->type = KAPPA_FIELD_DOUBLE;
        out->d = json_real_value(v);
        break;
    case JSON_STRING:
        out->type = KAPPA_FIELD_STRING;
        out->str = json_string_value(v);
        out->str_len = json_string_length(v);
        break;
    default:
        out->type = KAPPA_FIELD_OTHER;
        break;
    }
}

static int json_get(struct value_doc *d, const char *path,
                    struct kappa_field *out)
{
    const json_t *v;
    int depth = 0;

    if (d->err != 0) {
        return d->err;
    }
    if (d->root == NULL) {
        json_error_t jerr;
        d->root = parse(d, &jerr);
        d->parsed = 1;
        if (d->root == NULL || !json_is_object(d->root)) {
            value_doc_release(d);
            d->err = KAPPA_EPROTO;
            return d->err;
        }
    }
    v = d->root;
    while (path != NULL) {
        size_t len;
        const char *rest = next_component(path, &len);
        if (++depth > KAPPA_STREAM_FIELD_DEPTH || !json_is_object(v)) {
            return KAPPA_EPROTO;
        }
        v = json_object_getn(v, path, len);
        if (v == NULL) {
            return KAPPA_ENOENT;
        }
        path = rest;
    }
    json_to_field(v, out);
    return 0;
}

/* ---- msgpack --------------------------------------------------------------
 */

/* Reads a float32/float64 at the reader (the type was peeked as MP_FLOAT). */
static int mp_read_float(struct mp_reader *r, double *v)
{
    size_t left = (size_t)(r->end - r->p);
    if (left >= 5 && r->p[0] == 0xca) {
        uint32_t bits = (uint32_t)r->p[1] << 24 | (uint32_t)r->p[2] << 16 |
                        (uint32_t)r->p[3] << 8 | r->p[4];
        float f;
        memcpy(&f, &bits, sizeof f);
        *v = f;
        r->p += 5;
        return 0;
    }
    if (left >= 9 && r->p[0] == 0xcb) {
        uint64_t bits = 0;
        for (int k = 1; k <= 8; k++) {
            bits = bits << 8 | r->p[k];
        }
        memcpy(v, &bits, sizeof *v);
        r->p += 9;
        return 0;
    }
    r->err = KAPPA_EPROTO;
    return KAPPA_EPROTO;
}

static int mp_to_field(struct mp_reader *r, struct kappa_field *out)
{
    int b;
    uint64_t u;
    uint32_t len;

    memset(out, 0, sizeof *out);
    switch (mp_peek(r)) {
    case MP_NIL:
        out->type = KAPPA_FIELD_NULL;
        return mp_read_nil(r);
    case MP_BOOL:
        out->type = KAPPA_FIELD_BOOL;
        if (mp_read_bool(r, &b) != 0) {
            return KAPPA_EPROTO;
        }
        out->i = b != 0;
        out->d = (double)out->i;
        return 0;
    case MP_UINT:
        if (mp_read_uint(r, &u) != 0) {
            return KAPPA_EPROTO;
        }
        if (u > (uint64_t)INT64_MAX) {
            out->type = KAPPA_FIELD_DOUBLE;
            out->d = (double)u;
            return 0;
        }
        out->type = KAPPA_FIELD_INT;
        out->i = (int64_t)u;
        out->d = (double)out->i;
        return 0;
    case MP_INT:
        out->type = KAPPA_FIELD_INT;
        if (mp_read_int(r, &out->i) != 0) {
            return KAPPA_EPROTO;
        }
        out->d = (double)out->i;
        return 0;
    case MP_FLOAT:
        out->type = KAPPA_FIELD_DOUBLE;
        return mp_read_float(r, &out->d);
    case MP_STR:
        out->type = KAPPA_FIELD_STRING;
        if (mp_read_str(r, &out->str, &len) != 0) {
            return KAPPA_EPROTO;
        }
        out->str_len = len;
        return 0;
    case MP_INVALID:
        return KAPPA_EPROTO;
    default:
        out->type = KAPPA_FIELD_OTHER;
        return mp_skip(r) != 0 ? KAPPA_EPROTO : 0;
    }
}

/* Positions r on the value of key name (len bytes) in the map at r. */
static int mp_find_key(struct mp_reader *r, const char *name, size_t name_len)
{
    uint32_t n;
    if (mp_peek(r) != MP_MAP || mp_read_map(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    for (uint32_t k = 0; k < n; k++) {
        const char *key;
        uint32_t key_len;
        if (mp_peek(r) == MP_STR) {
            if (mp_read_str(r, &key, &key_len) != 0) {
                return KAPPA_EPROTO;
            }
            if (key_len == name_len && memcmp(key, name, name_len) == 0) {
                return 0;
            }
        } else if (mp_skip(r) != 0) {
            return KAPPA_EPROTO;
        }
        if (mp_skip(r) != 0) {
            return KAPPA_EPROTO;
        }
    }
    return KAPPA_ENOENT;
}

/* Scans the top-level map once and remembers where each value starts. A
 * malformed value is left for msgpack_get's scan to report. */
static void build_index(struct value_doc *d)
{
    struct mp_reader r;
    uint32_t n;
    int count = 0;

    d->n_index = -2;
    mp_reader_init(&r, d->data, d->len);
    if (mp_peek(&r) != MP_MAP || mp_read_map(&r, &n) != 0 ||
        n > VALUE_INDEX_MAX) {
        return;
    }
    for (uint32_t k = 0; k < n; k++) {
        const char *key;
        uint32_t key_len;
        if (mp_peek(&r) != MP_STR) {
            return;
        }
        if (mp_read_str(&r, &key, &key_len) != 0) {
            return;
        }
        d->index[count].key = key;
        d->index[count].key_len = key_len;
        d->index[count].value_offset =
            (uint32_t)(r.p - (const uint8_t *)d->data);
        count++;
        if (mp_skip(&r) != 0) {
            return;
        }
    }
    d->n_index = count;
}

/* Positions r on the value of the first path component via the index.
 * Returns 0, KAPPA_ENOENT, or -1 when there is no index. */
static int index_find(const struct value_doc *d, const char *name,
                      size_t name_len, struct mp_reader *r)
{
    if (d->n_index < 0) {
        return -1;
    }
    for (int k = 0; k < d->n_index; k++) {
        const struct value_index_entry *e = &d->index[k];
        if (e->key_len == name_len && memcmp(e->key, name, name_len) == 0) {
            r->p = (const uint8_t *)d->data + e->value_offset;
            return 0;
        }
    }
    return KAPPA_ENOENT;
}

static int msgpack_get(struct value_doc *d, const char *path,
                       struct kappa_field *out)
{
    struct mp_reader r;
    int depth = 0;

    mp_reader_init(&r, d->data, d->len);
    if (d->n_index == -1 && d->len <= UINT32_MAX) {
        build_index(d);
    }
    while (path != NULL) {
        size_t len;
        const char *rest = next_component(path, &len);
        int rv = depth == 0 ? index_find(d, path, len, &r) : -1;
        if (++depth > KAPPA_STREAM_FIELD_DEPTH) {
            return KAPPA_EPROTO;
        }
        if (rv < 0) {
            rv = mp_find_key(&r, path, len);
        }
        if (rv != 0) {
            return rv;
        }
        path = rest;
    }
    return mp_to_field(&r, out) != 0 ? KAPPA_EPROTO : 0;
}

int value_doc_get(struct value_doc *d, const char *path,
                  struct kappa_field *out)
{
    if (path == NULL || path[0] == '\0') {
        return KAPPA_ENOENT;
    }
    if (d->data == NULL) {
        return KAPPA_EPROTO;
    }
    if (d->format == KAPPA_FORMAT_JSON) {
        return json_get(d, path, out);
    }
    return msgpack_get(d, path, out);
}

int value_field_int(const struct kappa_field *f, int64_t *v)
{
    if (f->type == KAPPA_FIELD_INT) {
        *v = f->i;
        return 0;
    }
    if (f->type == KAPPA_FIELD_DOUBLE && isfinite(f->d) &&
        f->d == floor(f->d) && fabs(f->d) < 9.0e15) {
        *v = (int64_t)f->d;
        return 0;
    }
    return KAPPA_EINVAL;
}

int value_field_number(const struct kappa_field *f, double *v)
{
    if (f->type == KAPPA_FIELD_INT || f->type == KAPPA_FIELD_DOUBLE) {
        *v = f->d;
        return 0;
    }
    return KAPPA_EINVAL;
}

/* ---- Public -------------------------------------------------------------- */

static _Thread_local json_t *scratch_root;

int kappa_stream_field(enum kappa_stream_format format, const void *value,
                       size_t value_len, const char *name,
                       struct kappa_field *out)
{
    struct value_doc d;
    int rv;

    if (out == NULL || name == NULL ||
        (format != KAPPA_FORMAT_JSON && format != KAPPA_FORMAT_MSGPACK)) {
        return KAPPA_EINVAL;
    }
    if (scratch_root != NULL) {
        json_decref(scratch_root);
        scratch_root = NULL;
    }
    value_doc_init(&d, format, value, value_len);
    rv = value_doc_get(&d, name, out);
    /* The parse stays alive until the next call so STRING results remain
     * valid for the caller. */
    scratch_root = d.root;
    return rv;
}

enum kappa_stream_format kappa_stream_format_parse(const char *name)
{
    if (name != NULL && strcmp(name, "json") == 0) {
        return KAPPA_FORMAT_JSON;
    }
    if (name != NULL && strcmp(name, "msgpack") == 0) {
        return KAPPA_FORMAT_MSGPACK;
    }
    return 0;
}
