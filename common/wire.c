/*
 * Frame layout (both directions):
 *
 *   0   4   body_bytes   u32 big-endian, 1 .. frame.max.bytes
 *   4   ..  body         one msgpack value
 *
 * Request body:  array(4) [api_key uint, api_version uint,
 *                          correlation_id uint32, args map]
 * Response body: array(4) [correlation_id uint32, error_code uint,
 *                          error_message str|nil, result map|nil]
 */
#include "wire.h"

#include <string.h>

#include "endian.h"
#include "err.h"

const char *wire_api_name(int api_key)
{
    static const char *const names[WIRE_API_COUNT] = {
        "hello",   "metadata", "create_topic", "delete_topic",   "list_topics",
        "produce", "fetch",    "list_offsets", "cluster_status",
    };
    if (api_key < 0 || api_key >= WIRE_API_COUNT) {
        return "unknown";
    }
    return names[api_key];
}

int wire_frame_peek(const uint8_t *p, size_t n, uint32_t max_body_bytes,
                    uint32_t *body_bytes)
{
    uint32_t len;
    if (n < WIRE_FRAME_HEADER_BYTES) {
        return 1;
    }
    len = be32_get(p);
    if (len == 0) {
        return KAPPA_EPROTO;
    }
    if (len > max_body_bytes) {
        return KAPPA_ETOOBIG;
    }
    *body_bytes = len;
    return n - WIRE_FRAME_HEADER_BYTES >= len ? 0 : 1;
}

size_t wire_frame_begin(struct buf *out)
{
    size_t start = out->len;
    static const uint8_t zero[WIRE_FRAME_HEADER_BYTES];
    (void)buf_append(out, zero, sizeof zero);
    return start;
}

void wire_frame_end(struct buf *out, size_t start)
{
    if (out->len < start + WIRE_FRAME_HEADER_BYTES) {
        return; /* the header append failed; the writer reports ENOMEM */
    }
    be32_put(out->data + start,
             (uint32_t)(out->len - start - WIRE_FRAME_HEADER_BYTES));
}

static int read_u32(struct mp_reader *r, uint32_t *v)
{
    uint64_t u;
    if (mp_read_uint(r, &u) != 0 || u > UINT32_MAX) {
        r->err = KAPPA_EPROTO;
        return KAPPA_EPROTO;
    }
    *v = (uint32_t)u;
    return 0;
}

int wire_request_decode(const uint8_t *body, size_t n,
                        struct wire_request_header *h, struct mp_reader *args)
{
    uint32_t n_fields;
    mp_reader_init(args, body, n);
    if (mp_read_array(args, &n_fields) != 0 || n_fields != 4 ||
        read_u32(args, &h->api_key) != 0 ||
        read_u32(args, &h->api_version) != 0 ||
        read_u32(args, &h->correlation_id) != 0) {
        return KAPPA_EPROTO;
    }
    /* Only the type is checked here; the handler reads the map itself. */
    if (mp_peek(args) != MP_MAP) {
        args->err = KAPPA_EPROTO;
        return KAPPA_EPROTO;
    }
    return 0;
}

void wire_request_begin(struct mp_writer *w, uint32_t api_key,
                        uint32_t api_version, uint32_t correlation_id)
{
    mp_put_array(w, 4);
    mp_put_uint(w, api_key);
    mp_put_uint(w, api_version);
    mp_put_uint(w, correlation_id);
}

void wire_response_begin(struct mp_writer *w, uint32_t correlation_id,
                         int error_code, const char *message)
{
    mp_put_array(w, 4);
    mp_put_uint(w, correlation_id);
    mp_put_uint(w, (uint64_t)error_code);
    if (message == NULL) {
        mp_put_nil(w);
    } else {
        size_t len = strlen(message);
        mp_put_strn(w, message,
                    len > WIRE_ERRMSG_BYTES_MAX ? WIRE_ERRMSG_BYTES_MAX : len);
    }
}

int wire_response_decode(const uint8_t *body, size_t n,
                         struct wire_response_header *h,
                         struct mp_reader *result)
{
    uint32_t n_fields, code;
    mp_reader_init(result, body, n);
    if (mp_read_array(result, &n_fields) != 0 || n_fields != 4 ||
        read_u32(result, &h->correlation_id) != 0 ||
        read_u32(result, &code) != 0) {
        return KAPPA_EPROTO;
    }
    h->error_code = (int)code;
    h->message = NULL;
    h->message_len = 0;
    if (mp_peek(result) == MP_NIL) {
        (void)mp_read_nil(result);
    } else if (mp_read_str(result, &h->message, &h->message_len) != 0) {
        return KAPPA_EPROTO;
    }
    /* The result is a map, or nil (docs/protocol.md). */
    if (mp_peek(result) != MP_MAP && mp_peek(result) != MP_NIL) {
        result->err = KAPPA_EPROTO;
        return KAPPA_EPROTO;
    }
    return 0;
}
