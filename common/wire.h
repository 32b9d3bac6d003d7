/* The Kappa wire protocol envelope: length-prefixed msgpack frames carrying
 * requests [api_key, api_version, correlation_id, args] and responses
 * [correlation_id, error_code, error_message, result]. docs/protocol.md
 * gives every API's fields. */
#ifndef KAPPA_COMMON_WIRE_H
#define KAPPA_COMMON_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "mp.h"

#define WIRE_FRAME_HEADER_BYTES 4
/* Default ceiling on one frame's body; brokers and clients may set lower. */
#define WIRE_FRAME_BYTES_MAX_DEFAULT (64u * 1024 * 1024)
/* Upper bound on error messages sent in a response. */
#define WIRE_ERRMSG_BYTES_MAX 255

/* API keys: append only, never renumber. */
enum wire_api {
    WIRE_API_HELLO = 0,
    WIRE_API_METADATA = 1,
    WIRE_API_CREATE_TOPIC = 2,
    WIRE_API_DELETE_TOPIC = 3,
    WIRE_API_LIST_TOPICS = 4,
    WIRE_API_PRODUCE = 5,
    WIRE_API_FETCH = 6,
    WIRE_API_LIST_OFFSETS = 7,
    WIRE_API_CLUSTER_STATUS = 8,
    WIRE_API_COUNT
};

/* Every API is at version 0 today. */
#define WIRE_API_VERSION_MIN 0
#define WIRE_API_VERSION_MAX 0

/* Special timestamps for ListOffsets and consumer seeks. */
#define WIRE_OFFSET_LATEST   (-1)
#define WIRE_OFFSET_EARLIEST (-2)

const char *wire_api_name(int api_key);

/* Looks at the start of a receive buffer. Returns 0 with *body_bytes set when
 * a whole frame of WIRE_FRAME_HEADER_BYTES + *body_bytes is present, 1 when
 * more bytes are needed, KAPPA_ETOOBIG when the declared body exceeds
 * max_body_bytes, KAPPA_EPROTO for a zero-length body. */
int wire_frame_peek(const uint8_t *p, size_t n, uint32_t max_body_bytes,
                    uint32_t *body_bytes);

/* Starts a frame at the end of out (4 placeholder bytes); returns its start
 * for wire_frame_end, which patches in the body length. */
size_t wire_frame_begin(struct buf *out);
void wire_frame_end(struct buf *out, size_t start);

struct wire_request_header {
    uint32_t api_key;
    uint32_t api_version;
    uint32_t correlation_id;
};

/* Decodes a request envelope; leaves args positioned at the args value (a
 * map). Returns 0 or KAPPA_EPROTO. */
int wire_request_decode(const uint8_t *body, size_t n,
                        struct wire_request_header *h, struct mp_reader *args);

/* Writes the request envelope up to the args; the caller writes one args
 * value (a map) and then calls wire_frame_end. */
void wire_request_begin(struct mp_writer *w, uint32_t api_key,
                        uint32_t api_version, uint32_t correlation_id);

/* Writes the response envelope up to the result; with error_code != 0 the
 * caller writes mp_put_nil or a partial result. message may be NULL. */
void wire_response_begin(struct mp_writer *w, uint32_t correlation_id,
                         int error_code, const char *message);

struct wire_response_header {
    uint32_t correlation_id;
    int error_code;
    const char *message; /* borrowed, not NUL-terminated; NULL if none */
    uint32_t message_len;
};

/* Decodes a response envelope; leaves result positioned at the result
 * value. Returns 0 or KAPPA_EPROTO. */
int wire_response_decode(const uint8_t *body, size_t n,
                         struct wire_response_header *h,
                         struct mp_reader *result);

#endif /* KAPPA_COMMON_WIRE_H */
