/* Checkpoint encoding of a window's partial aggregate.
 *
 * All integers little-endian, doubles as their IEEE-754 bit pattern:
 *
 *   offset  size  field
 *   0       1     version (1)
 *   1       1     aggregation kind (enum kappa_agg_kind)
 *   2       8     count: events folded into the window
 *   10      8     sum
 *   18      8     min (meaningless while count is 0)
 *   26      8     max
 *   34      4     n: distinct values that follow (0 unless DISTINCT)
 *   38      ...   n times: u16 length (1..KAPPA_STREAM_KEY_MAX), the bytes
 *
 * The blob ends exactly after the last value. Doubles are stored bit for
 * bit, so a restored sum continues exactly where the crashed run was and
 * the output stays identical. */
#include "state.h"

#include <string.h>

#include "common/endian.h"
#include "common/err.h"

static void put_double(uint8_t *p, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    le64_put(p, bits);
}

static double get_double(const uint8_t *p)
{
    uint64_t bits = le64_get(p);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

int state_encode(const struct agg_state *a, enum kappa_agg_kind kind,
                 struct buf *out)
{
    uint8_t h[STATE_HEADER_BYTES];
    const struct dset *s = &a->distinct;

    h[0] = STATE_VERSION;
    h[1] = (uint8_t)kind;
    le64_put(h + 2, a->count);
    put_double(h + 10, a->sum);
    put_double(h + 18, a->min);
    put_double(h + 26, a->max);
    le32_put(h + 34, s->n);
    if (buf_append(out, h, sizeof h) != 0) {
        return KAPPA_ENOMEM;
    }
    /* The set's byte area is already a sequence of (u16 length, bytes)
     * in insertion order. */
    if (s->bytes_len > 0 && buf_append(out, s->bytes, s->bytes_len) != 0) {
        return KAPPA_ENOMEM;
    }
    return 0;
}

static int decode_values(const uint8_t *p, const uint8_t *end, uint32_t n,
                         uint32_t distinct_max, struct dset *s)
{
    if (n > distinct_max) {
        return KAPPA_ETOOBIG;
    }
    for (uint32_t k = 0; k < n; k++) {
        size_t len;
        int rv;
        if (end - p < 2) {
            return KAPPA_CORRUPT();
        }
        len = le16_get(p);
        p += 2;
        if (len == 0 || len > KAPPA_STREAM_KEY_MAX || (size_t)(end - p) < len) {
            return KAPPA_CORRUPT();
        }
        rv = dset_add(s, p, len);
        if (rv < 0) {
            return -rv;
        }
        if (rv == 0) {
            return KAPPA_CORRUPT(); /* a duplicate */
        }
        p += len;
    }
    return p == end ? 0 : KAPPA_CORRUPT();
}

int state_decode(const void *data, size_t len, enum kappa_agg_kind kind,
                 uint32_t distinct_max, struct agg_state *a)
{
    const uint8_t *p = data;
    uint32_t n;
    int rv;

    memset(a, 0, sizeof *a);
    if (p == NULL || len < STATE_HEADER_BYTES || p[0] != STATE_VERSION ||
        p[1] != (uint8_t)kind) {
        return KAPPA_CORRUPT();
    }
    a->count = le64_get(p + 2);
    a->sum = get_double(p + 10);
    a->min = get_double(p + 18);
    a->max = get_double(p + 26);
    n = le32_get(p + 34);
    if (a->count == 0 || (kind != KAPPA_AGG_DISTINCT && n != 0) ||
        (kind == KAPPA_AGG_DISTINCT && (n == 0 || n > a->count))) {
        return KAPPA_CORRUPT();
    }
    rv = decode_values(p + STATE_HEADER_BYTES, p + len, n, distinct_max,
                       &a->distinct);
    if (rv != 0) {
        dset_free(&a->distinct);
        memset(a, 0, sizeof *a);
    }
    return rv;
}
