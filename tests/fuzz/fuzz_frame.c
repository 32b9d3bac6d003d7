/* libFuzzer target for the wire codec: frame peek, request and response
 * envelopes, a typed walk of every value (checked against mp_skip), and the
 * batch decoders on every bin found inside. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check_batches.h"
#include "common/log.h"
#include "common/mp.h"
#include "common/wire.h"

#define FUZZ_FRAME_BYTES_MAX (1u << 20)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(struct mp_reader *r, int depth);

static void walk_str(struct mp_reader *r)
{
    struct mp_reader copy = *r;
    const char *s;
    uint32_t len;
    char cstr[64];

    if (mp_read_str(r, &s, &len) != 0) {
        return;
    }
    touch((const uint8_t *)s, len);
    /* mp_read_cstr accepts exactly the strings that fit and hold no NUL. */
    FUZZ_CHECK((mp_read_cstr(&copy, cstr, sizeof cstr) == 0) ==
               (len < sizeof cstr && memchr(s, '\0', len) == NULL));
    FUZZ_CHECK(copy.p == r->p || copy.err != 0);
}

static void walk_int(struct mp_reader *r)
{
    const struct mp_reader start = *r;
    struct mp_reader copy = *r;
    int is_uint = mp_peek(r) == MP_UINT;
    int64_t v, got;
    uint64_t u;

    if (mp_read_int(r, &v) != 0) {
        /* Only unsigned values above INT64_MAX (or cut ones) fail; those
         * are still valid msgpack, so the walk goes on past them. */
        if (mp_read_uint(&copy, &u) == 0) {
            FUZZ_CHECK(is_uint && u > INT64_MAX);
            *r = copy;
        }
        return;
    }
    if (is_uint) {
        FUZZ_CHECK(mp_read_uint(&copy, &u) == 0 && u == (uint64_t)v);
    }
    /* The range check is inclusive on both ends. */
    copy = start;
    FUZZ_CHECK(mp_read_int_range(&copy, v, v, &got) == 0 && got == v);
    FUZZ_CHECK(copy.p == r->p);
    if (v < INT64_MAX) {
        copy = start;
        FUZZ_CHECK(mp_read_int_range(&copy, v + 1, INT64_MAX, &got) ==
                   KAPPA_EPROTO);
    }
}

static void walk_container(struct mp_reader *r, int depth, int is_map)
{
    uint32_t n;
    uint64_t n_values;
    /* Same limit as mp_skip: containers at depth MP_DEPTH_MAX fail. */
    if ((is_map ? mp_read_map(r, &n) : mp_read_array(r, &n)) != 0) {
        return;
    }
    if (depth >= MP_DEPTH_MAX) {
        r->err = KAPPA_EPROTO;
        return;
    }
    n_values = is_map ? (uint64_t)n * 2 : n;
    for (uint64_t i = 0; i < n_values && r->err == 0; i++) {
        walk(r, depth + 1);
    }
}

static void walk(struct mp_reader *r, int depth)
{
    const uint8_t *bin;
    uint32_t len;

    switch (mp_peek(r)) {
    case MP_ARRAY:
        walk_container(r, depth, 0);
        break;
    case MP_MAP:
        walk_container(r, depth, 1);
        break;
    case MP_BIN:
        if (mp_read_bin(r, &bin, &len) == 0) {
            check_batches_both(bin, len);
        }
        break;
    case MP_STR:
        walk_str(r);
        break;
    case MP_INT:
    case MP_UINT:
        walk_int(r);
        break;
    default:
        (void)mp_skip(r);
        break;
    }
    FUZZ_CHECK(r->p <= r->end);
    FUZZ_CHECK(r->err == 0 || r->err == KAPPA_EPROTO);
}

/* Walks one value and checks that mp_skip agrees on success and length. */
static void walk_checked(const struct mp_reader *start)
{
    struct mp_reader a = *start;
    struct mp_reader b = *start;
    int skip_rv = mp_skip(&b);
    walk(&a, 0);
    FUZZ_CHECK(skip_rv == 0 || skip_rv == KAPPA_EPROTO);
    FUZZ_CHECK((skip_rv == 0) == (a.err == 0));
    if (skip_rv == 0) {
        FUZZ_CHECK(a.p == b.p);
    }
}

static void decode_body(const uint8_t *body, size_t n)
{
    struct wire_request_header req;
    struct wire_response_header resp;
    struct mp_reader r;

    if (wire_request_decode(body, n, &req, &r) == 0) {
        FUZZ_CHECK(mp_peek(&r) == MP_MAP);
        walk_checked(&r);
    }
    if (wire_response_decode(body, n, &resp, &r) == 0) {
        FUZZ_CHECK(resp.message == NULL || resp.message_len <= n);
        touch((const uint8_t *)resp.message, resp.message_len);
        FUZZ_CHECK(mp_peek(&r) == MP_MAP || mp_peek(&r) == MP_NIL);
        walk_checked(&r);
    }
    mp_reader_init(&r, body, n);
    walk_checked(&r);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kappa_log_set_level(KAPPA_LOG_OFF);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t body_bytes = 0;
    uint8_t *body;
    size_t n;
    int rv = wire_frame_peek(data, size, FUZZ_FRAME_BYTES_MAX, &body_bytes);

    FUZZ_CHECK(rv == 0 || rv == 1 || rv == KAPPA_EPROTO || rv == KAPPA_ETOOBIG);
    if (rv == KAPPA_EPROTO || rv == KAPPA_ETOOBIG) {
        return 0;
    }
    if (rv == 0) {
        FUZZ_CHECK(body_bytes >= 1 && body_bytes <= size - 4);
        n = body_bytes;
    } else if (size >= WIRE_FRAME_HEADER_BYTES) {
        /* A short frame: decode what arrived anyway, since matching the
         * length exactly is hard for the fuzzer and the decoders must cope
         * with any body. */
        FUZZ_CHECK(body_bytes > size - 4);
        n = size - 4;
    } else {
        return 0;
    }
    /* An exactly sized copy, so that reads past the body are caught. */
    body = malloc(n);
    if (body == NULL) {
        return 0;
    }
    memcpy(body, data + 4, n);
    decode_body(body, n);
    free(body);
    return 0;
}
