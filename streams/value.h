/* Field extraction from record values: JSON objects through jansson, parsed
 * at most once per value, and msgpack maps read in place with the bounded
 * reader of common/mp.h. */
#ifndef KAPPA_STREAMS_VALUE_H
#define KAPPA_STREAMS_VALUE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include <kappa/streams.h>

/* Top-level keys of a msgpack map remembered by the first lookup, so
 * later lookups of the same value do not scan it again. */
#define VALUE_INDEX_MAX 16

struct value_index_entry {
    const char *key;
    uint32_t key_len;
    uint32_t value_offset;
};

/* One value under inspection. Borrows data until value_doc_release. */
struct value_doc {
    enum kappa_stream_format format;
    const void *data;
    size_t len;
    json_t *root; /* JSON: the parse, once a field was asked for */
    int err;      /* sticky parse failure: KAPPA_EPROTO */
    int in_arena; /* JSON: root lives in the thread's parse arena */
    int parsed;   /* JSON: a parse was attempted and counted */
    int n_index;  /* msgpack: -1 not built, -2 too many keys to index */
    struct value_index_entry index[VALUE_INDEX_MAX];
};

void value_doc_init(struct value_doc *d, enum kappa_stream_format format,
                    const void *data, size_t len);
/* Makes a JSON doc parse into the calling thread's arena instead of one
 * malloc per node; the arena is reset when the last arena doc of the thread
 * is released. The doc must be released on the thread that parsed it. */
void value_doc_use_arena(struct value_doc *d);
/* Looks up a dotted path. Strings point into the value (msgpack) or into
 * the parse (JSON), valid until value_doc_release. Returns 0, KAPPA_ENOENT
 * or KAPPA_EPROTO. */
int value_doc_get(struct value_doc *d, const char *path,
                  struct kappa_field *out);
void value_doc_release(struct value_doc *d);

/* The field as an integer (INT, or a DOUBLE with an integral value in
 * range). Returns 0 or KAPPA_EINVAL. */
int value_field_int(const struct kappa_field *f, int64_t *v);
/* The field as a number (INT or DOUBLE). Returns 0 or KAPPA_EINVAL. */
int value_field_number(const struct kappa_field *f, double *v);

#endif /* KAPPA_STREAMS_VALUE_H */
