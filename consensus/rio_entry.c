/* Raft entry <-> stored batch (see rio_entry.h and the control batch in
 * common/batch.c). */
#include "rio_entry.h"

#include <inttypes.h>
#include <string.h>

#include "common/endian.h"
#include "common/err.h"

/* The attributes byte of a batch header (common/batch.c). */
#define BATCH_OFF_ATTRIBUTES 25

/* The one record of a built batch: key, value. */
static bool is_built(const struct raft_entry *e, bool is_wrapped)
{
    return e->type != RAFT_COMMAND || is_wrapped;
}

static uint32_t built_value_len(const struct raft_entry *e)
{
    return e->type == RAFT_BARRIER ? 0 : (uint32_t)e->buf.len;
}

static int check_command(const struct raft_entry *e, int64_t base_offset,
                         int64_t *next_offset, char *errmsg)
{
    struct batch_header h;

    if (e->buf.len < KAPPA_BATCH_HEADER_BYTES ||
        batch_header_decode(e->buf.base, e->buf.len, &h) != 0 ||
        h.batch_bytes != e->buf.len) {
        kappa_errmsg_printf(errmsg,
                            "command entry of %zu bytes is not one "
                            "record batch",
                            e->buf.len);
        return KAPPA_EINVAL;
    }
    if ((h.attributes & KAPPA_BATCH_ATTR_CONTROL) != 0) {
        kappa_errmsg_printf(errmsg, "command entry is a control batch");
        return KAPPA_EINVAL;
    }
    if (h.base_offset != base_offset || h.term != e->term) {
        kappa_errmsg_printf(
            errmsg,
            "command batch numbered offset %" PRId64 " term %" PRIu64
            ", want offset %" PRId64 " term %" PRIu64,
            h.base_offset, h.term, base_offset, (uint64_t)e->term);
        return KAPPA_EINVAL;
    }
    *next_offset = base_offset + (int64_t)h.record_count;
    return 0;
}

int rio_entry_check(const struct raft_entry *e, bool is_wrapped,
                    int64_t base_offset, int64_t *next_offset, char *errmsg)
{
    if (e->type != RAFT_COMMAND && e->type != RAFT_BARRIER &&
        e->type != RAFT_CHANGE) {
        kappa_errmsg_printf(errmsg, "entry type %u", e->type);
        return KAPPA_EINVAL;
    }
    if (!is_built(e, is_wrapped)) {
        return check_command(e, base_offset, next_offset, errmsg);
    }
    /* Header, record framing (a few varints) and the one-byte key. */
    if (e->buf.len > KAPPA_BATCH_BYTES_MAX - KAPPA_BATCH_HEADER_BYTES - 64) {
        kappa_errmsg_printf(errmsg, "entry of %zu bytes", e->buf.len);
        return KAPPA_ETOOBIG;
    }
    *next_offset = base_offset + 1;
    return 0;
}

int rio_entry_encode(struct buf *out, struct batch_builder *b,
                     const struct raft_entry *e, bool is_wrapped,
                     int64_t base_offset)
{
    uint8_t type = (uint8_t)e->type;
    uint8_t *p;
    int rv;

    if (!is_built(e, is_wrapped)) {
        return buf_append(out, e->buf.base, e->buf.len);
    }
    batch_builder_reset(b);
    /* A non-NULL pointer: an empty value is not a null one. */
    rv = batch_builder_add(b, e->type == RAFT_COMMAND ? NULL : &type,
                           e->type == RAFT_COMMAND ? 0 : 1,
                           e->buf.len > 0 ? e->buf.base : (const void *)"",
                           built_value_len(e), NULL, 0, 0);
    if (rv == 0) {
        rv = batch_builder_finish(b, KAPPA_COMPRESSION_NONE, -1, -1, -1);
    }
    if (rv != 0) {
        return rv;
    }
    p = b->buf.data;
    if (e->type != RAFT_COMMAND) {
        /* The attributes byte is inside the CRC: set it, then recompute. */
        p[BATCH_OFF_ATTRIBUTES] = KAPPA_BATCH_ATTR_CONTROL;
        le32_put(p + KAPPA_BATCH_OFF_CRC, batch_crc_compute(p, b->buf.len));
    }
    batch_set_base_offset(p, base_offset);
    batch_set_term(p, e->term);
    return buf_append(out, p, b->buf.len);
}

int rio_entry_decode(const uint8_t *p, const struct batch_header *h,
                     bool is_wrapped, struct raft_entry *e)
{
    bool is_control = (h->attributes & KAPPA_BATCH_ATTR_CONTROL) != 0;
    struct batch_reader r;
    struct record_view v;
    int rv;

    e->term = h->term;
    e->batch = NULL;
    if (!is_control && !is_wrapped) {
        e->type = RAFT_COMMAND;
        e->buf.base = (void *)p;
        e->buf.len = h->batch_bytes;
        return 0;
    }
    if (h->record_count != 1 ||
        (h->attributes & KAPPA_BATCH_ATTR_COMPRESSION_MASK) != 0) {
        return KAPPA_ECORRUPT;
    }
    batch_reader_init(&r);
    rv = batch_reader_open(&r, p, h->batch_bytes);
    if (rv == 0) {
        rv = batch_reader_next(&r, &v) == 1 ? 0 : KAPPA_ECORRUPT;
    }
    if (rv == 0 && batch_reader_next(&r, &v) != 0) {
        rv = KAPPA_ECORRUPT;
    }
    batch_reader_free(&r);
    if (rv != 0 || v.value == NULL) {
        return KAPPA_ECORRUPT;
    }
    if (!is_control) {
        if (v.key != NULL) {
            return KAPPA_ECORRUPT;
        }
        e->type = RAFT_COMMAND;
    } else if (v.key != NULL && v.key_len == 1 &&
               (v.key[0] == RAFT_BARRIER || v.key[0] == RAFT_CHANGE)) {
        e->type = v.key[0];
    } else {
        return KAPPA_ECORRUPT;
    }
    e->buf.base = (void *)v.value;
    e->buf.len = v.value_len;
    return 0;
}
