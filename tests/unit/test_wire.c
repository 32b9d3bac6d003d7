/* Unit tests for common/wire: frame length peeking, request and response
 * envelopes round-tripped byte for byte, and invalid envelopes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/mp.h"
#include "common/wire.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static uint8_t *exact_copy(const void *p, size_t n)
{
    /* Exactly n bytes, so ASan catches any read past them; calloc keeps gcc
     * -O2 from flagging the zero-length case as uninitialised. */
    uint8_t *copy = calloc(n > 0 ? n : 1, 1);
    assert_non_null(copy);
    if (n > 0) {
        memcpy(copy, p, n);
    }
    return copy;
}

/* Frames. */

static void test_frame_peek_prefixes(void **state)
{
    /* A frame with a 5-byte body, followed by the start of another. */
    static const uint8_t frame[] = {0, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0};
    (void)state;
    for (size_t n = 0; n <= sizeof frame; n++) {
        uint8_t *p = exact_copy(frame, n);
        uint32_t body = 0xdeadbeef;
        int rv = wire_frame_peek(p, n, 1024, &body);
        if (n < WIRE_FRAME_HEADER_BYTES) {
            assert_int_equal(rv, 1);
            assert_int_equal(body, 0xdeadbeef); /* untouched */
        } else if (n < 9) {
            assert_int_equal(rv, 1);
        } else {
            assert_int_equal(rv, 0);
            assert_int_equal(body, 5);
        }
        free(p);
    }
}

static void test_frame_peek_table(void **state)
{
    static const struct {
        const char *name;
        uint8_t bytes[8];
        size_t n;
        uint32_t max;
        int rv;
        uint32_t body;
    } cases[] = {
        {"zero length", {0, 0, 0, 0}, 4, 1024, KAPPA_EPROTO, 0},
        {"zero length with bytes after",
         {0, 0, 0, 0, 1, 2},
         6,
         1024,
         KAPPA_EPROTO,
         0},
        {"one byte body", {0, 0, 0, 1, 0xc0}, 5, 1024, 0, 1},
        {"exactly max", {0, 0, 4, 0}, 4, 1024, 1, 1024},
        {"max plus one", {0, 0, 4, 1}, 4, 1024, KAPPA_ETOOBIG, 0},
        {"too big before any body",
         {0xff, 0xff, 0xff, 0xff},
         4,
         1024,
         KAPPA_ETOOBIG,
         0},
        {"too big for the default",
         {0x04, 0x00, 0x00, 0x01},
         4,
         WIRE_FRAME_BYTES_MAX_DEFAULT,
         KAPPA_ETOOBIG,
         0},
        {"default max",
         {0x04, 0x00, 0x00, 0x00},
         4,
         WIRE_FRAME_BYTES_MAX_DEFAULT,
         1,
         64u << 20},
        {"big-endian length",
         {0x00, 0x01, 0x02, 0x03},
         4,
         UINT32_MAX,
         1,
         0x010203},
        {"max of 0 rejects everything",
         {0, 0, 0, 1, 0xc0},
         5,
         0,
         KAPPA_ETOOBIG,
         0},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        uint8_t *p = exact_copy(cases[i].bytes, cases[i].n);
        uint32_t body = 0;
        int rv = wire_frame_peek(p, cases[i].n, cases[i].max, &body);
        if (rv != cases[i].rv) {
            fail_msg("%s: got %d want %d", cases[i].name, rv, cases[i].rv);
        }
        if (rv == 0 || rv == 1) {
            assert_int_equal(body, cases[i].body);
        }
        free(p);
    }
}

/* Requests. */

static void test_request_golden_bytes(void **state)
{
    static const uint8_t want[] = {
        0x00, 0x00, 0x00, 0x0a, /* body length 10 */
        0x94,                   /* array(4) */
        0x05,                   /* api_key produce */
        0x00,                   /* api_version */
        0xcd, 0x01, 0x2c,       /* correlation id 300 */
        0x81, 0xa1, 'a',  0x01, /* {"a": 1} */
    };
    struct buf out = {0};
    struct mp_writer w;
    size_t start;
    (void)state;

    start = wire_frame_begin(&out);
    assert_int_equal(start, 0);
    mp_writer_init(&w, &out);
    wire_request_begin(&w, WIRE_API_PRODUCE, 0, 300);
    mp_put_map(&w, 1);
    mp_put_str(&w, "a");
    mp_put_int(&w, 1);
    wire_frame_end(&out, start);
    assert_int_equal(w.err, 0);
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    buf_free(&out);
}

static void encode_request(struct buf *out, uint32_t api_key,
                           uint32_t api_version, uint32_t correlation_id)
{
    struct mp_writer w;
    size_t start = wire_frame_begin(out);
    mp_writer_init(&w, out);
    wire_request_begin(&w, api_key, api_version, correlation_id);
    mp_put_map(&w, 2);
    mp_put_str(&w, "topic");
    mp_put_str(&w, "events");
    mp_put_str(&w, "records");
    mp_put_bin(&w, "\x01\x02\x03", 3);
    wire_frame_end(out, start);
    assert_int_equal(w.err, 0);
}

static void test_request_round_trip(void **state)
{
    static const struct wire_request_header cases[] = {
        {WIRE_API_HELLO, 0, 0},   {WIRE_API_PRODUCE, 0, 1},
        {WIRE_API_FETCH, 7, 127}, {WIRE_API_LIST_OFFSETS, 255, 128},
        {1000, 65536, 65535},     {UINT32_MAX, UINT32_MAX, UINT32_MAX},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct buf out = {0};
        struct wire_request_header h;
        struct mp_reader args;
        uint32_t body = 0, n = 0;
        const char *s;
        const uint8_t *bin;
        uint32_t len;

        encode_request(&out, cases[i].api_key, cases[i].api_version,
                       cases[i].correlation_id);
        assert_int_equal(wire_frame_peek(out.data, out.len, 4096, &body), 0);
        assert_int_equal(body + WIRE_FRAME_HEADER_BYTES, out.len);

        memset(&h, 0xa5, sizeof h);
        assert_int_equal(wire_request_decode(out.data + 4, body, &h, &args), 0);
        assert_int_equal(h.api_key, cases[i].api_key);
        assert_int_equal(h.api_version, cases[i].api_version);
        assert_int_equal(h.correlation_id, cases[i].correlation_id);

        /* args is positioned at the map. */
        assert_int_equal(mp_peek(&args), MP_MAP);
        assert_int_equal(mp_read_map(&args, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(mp_read_str(&args, &s, &len), 0);
        assert_true(mp_key_is(s, len, "topic"));
        assert_int_equal(mp_read_str(&args, &s, &len), 0);
        assert_true(mp_key_is(s, len, "events"));
        assert_int_equal(mp_read_str(&args, &s, &len), 0);
        assert_true(mp_key_is(s, len, "records"));
        assert_int_equal(mp_read_bin(&args, &bin, &len), 0);
        assert_int_equal(len, 3);
        assert_memory_equal(bin, "\x01\x02\x03", 3);
        assert_ptr_equal(args.p, args.end);
        buf_free(&out);
    }
}

/* Two frames back to back in one buffer peek one at a time. */
static void test_pipelined_frames(void **state)
{
    struct buf out = {0};
    struct wire_request_header h;
    struct mp_reader args;
    uint32_t body;
    size_t pos = 0;
    (void)state;

    encode_request(&out, WIRE_API_METADATA, 0, 1);
    encode_request(&out, WIRE_API_FETCH, 0, 2);
    for (uint32_t want = 1; want <= 2; want++) {
        assert_int_equal(
            wire_frame_peek(out.data + pos, out.len - pos, 4096, &body), 0);
        assert_int_equal(
            wire_request_decode(out.data + pos + 4, body, &h, &args), 0);
        assert_int_equal(h.correlation_id, want);
        assert_int_equal(mp_skip(&args), 0);
        assert_ptr_equal(args.p, out.data + pos + 4 + body);
        pos += 4 + body;
    }
    assert_int_equal(pos, out.len);
    assert_int_equal(wire_frame_peek(out.data + pos, 0, 4096, &body), 1);
    buf_free(&out);
}

struct bad_body {
    const char *name;
    uint8_t bytes[24];
    size_t n;
};

static const struct bad_body bad_requests[] = {
    {"empty body", {0}, 0},
    {"nil", {0xc0}, 1},
    {"int", {0x05}, 1},
    {"string", {0xa3, 'a', 'b', 'c'}, 4},
    {"map of 4", {0x84, 0, 0, 1, 1, 2, 2, 3, 0x80}, 9},
    {"array of 0", {0x90}, 1},
    {"array of 3", {0x93, 0x05, 0x00, 0x01}, 4},
    {"array of 5", {0x95, 0x05, 0x00, 0x01, 0x80, 0xc0}, 6},
    {"array16 of 5", {0xdc, 0x00, 0x05, 0x05, 0x00, 0x01, 0x80, 0xc0}, 8},
    {"array declares more than the body", {0x94, 0x05, 0x00}, 3},
    {"negative correlation id", {0x94, 0x05, 0x00, 0xff, 0x80}, 5},
    {"int8 negative correlation id", {0x94, 0x05, 0x00, 0xd0, 0x80, 0x80}, 6},
    {"correlation id 2^32",
     {0x94, 0x05, 0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0x80},
     13},
    {"correlation id 2^64-1",
     {0x94, 0x05, 0x00, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
      0x80},
     13},
    {"api_key 2^32",
     {0x94, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0x00, 0x01, 0x80},
     13},
    {"negative api_version", {0x94, 0x05, 0xe0, 0x01, 0x80}, 5},
    {"api_key as string", {0x94, 0xa1, '5', 0x00, 0x01, 0x80}, 6},
    {"api_version nil", {0x94, 0x05, 0xc0, 0x01, 0x80}, 5},
    {"correlation id as float", {0x94, 0x05, 0x00, 0xca, 0, 0, 0, 0, 0x80}, 9},
    {"correlation id as bool", {0x94, 0x05, 0x00, 0xc3, 0x80}, 5},
    {"correlation id missing", {0x94, 0x05, 0x00}, 3},
    {"args not a map: int", {0x94, 0x05, 0x00, 0x01, 0x07}, 5},
    {"args not a map: array", {0x94, 0x05, 0x00, 0x01, 0x90}, 5},
    {"args not a map: nil", {0x94, 0x05, 0x00, 0x01, 0xc0}, 5},
    {"args 0xc1", {0x94, 0x05, 0x00, 0x01, 0xc1}, 5},
    {"0xc1 as the envelope", {0xc1}, 1},
};

static void test_request_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(bad_requests); i++) {
        const struct bad_body *c = &bad_requests[i];
        uint8_t *p = exact_copy(c->bytes, c->n);
        struct wire_request_header h;
        struct mp_reader args;
        int rv = wire_request_decode(p, c->n, &h, &args);
        if (rv != KAPPA_EPROTO) {
            fail_msg("%s: got %d", c->name, rv);
        }
        free(p);
    }
}

/* Every strict prefix of a valid request body fails (the array header
 * declares more elements than remain, or a field is cut). */
static void test_request_prefixes(void **state)
{
    struct buf out = {0};
    uint32_t body;
    (void)state;
    encode_request(&out, WIRE_API_PRODUCE, 0, 70000);
    assert_int_equal(wire_frame_peek(out.data, out.len, 4096, &body), 0);
    for (size_t n = 0; n < body; n++) {
        uint8_t *p = exact_copy(out.data + 4, n);
        struct wire_request_header h;
        struct mp_reader args;
        int rv = wire_request_decode(p, n, &h, &args);
        /* The envelope may decode when only the args are cut; the args
         * reader must then fail. */
        if (rv == 0) {
            assert_int_equal(mp_skip(&args), KAPPA_EPROTO);
        } else {
            assert_int_equal(rv, KAPPA_EPROTO);
        }
        free(p);
    }
    buf_free(&out);
}

/* Responses. */

static void test_response_golden_bytes(void **state)
{
    static const uint8_t want[] = {
        0x00, 0x00, 0x00, 0x0a, /* body length 10 */
        0x94,                   /* array(4) */
        0x07,                   /* correlation id */
        0xcd, 0x03, 0xf2,       /* error 1010 */
        0xa3, 'b',  'a',  'd',  /* message */
        0xc0,                   /* result nil */
    };
    struct buf out = {0};
    struct mp_writer w;
    size_t start;
    (void)state;

    start = wire_frame_begin(&out);
    mp_writer_init(&w, &out);
    wire_response_begin(&w, 7, KAPPA_ECORRUPT, "bad");
    mp_put_nil(&w);
    wire_frame_end(&out, start);
    assert_int_equal(w.err, 0);
    assert_int_equal(out.len, sizeof want);
    assert_memory_equal(out.data, want, sizeof want);
    buf_free(&out);
}

static void test_response_round_trip(void **state)
{
    static const struct {
        uint32_t correlation_id;
        int error_code;
        const char *message;
        int result_is_map;
    } cases[] = {
        {0, 0, NULL, 1},
        {1, 0, "", 1},
        {UINT32_MAX, KAPPA_EUNKNOWN_TOPIC, "unknown topic: x", 0},
        {42, KAPPA_ECOMPRESSION, NULL, 0},
        {65536, KAPPA_EPROTO, "malformed request", 1},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        struct buf out = {0};
        struct mp_writer w;
        struct wire_response_header h;
        struct mp_reader result;
        size_t start = wire_frame_begin(&out);
        uint32_t body = 0, n = 0;

        mp_writer_init(&w, &out);
        wire_response_begin(&w, cases[i].correlation_id, cases[i].error_code,
                            cases[i].message);
        if (cases[i].result_is_map) {
            mp_put_map(&w, 1);
            mp_put_str(&w, "k");
            mp_put_int(&w, -9);
        } else {
            mp_put_nil(&w);
        }
        wire_frame_end(&out, start);
        assert_int_equal(w.err, 0);
        assert_int_equal(wire_frame_peek(out.data, out.len, 4096, &body), 0);
        assert_int_equal(body + 4, out.len);

        assert_int_equal(wire_response_decode(out.data + 4, body, &h, &result),
                         0);
        assert_int_equal(h.correlation_id, cases[i].correlation_id);
        assert_int_equal(h.error_code, cases[i].error_code);
        if (cases[i].message == NULL) {
            assert_null(h.message);
            assert_int_equal(h.message_len, 0);
        } else {
            assert_int_equal(h.message_len, strlen(cases[i].message));
            assert_memory_equal(h.message, cases[i].message, h.message_len);
        }
        if (cases[i].result_is_map) {
            int64_t v = 0;
            const char *s;
            uint32_t len;
            assert_int_equal(mp_read_map(&result, &n), 0);
            assert_int_equal(n, 1);
            assert_int_equal(mp_read_str(&result, &s, &len), 0);
            assert_true(mp_key_is(s, len, "k"));
            assert_int_equal(mp_read_int(&result, &v), 0);
            assert_int_equal(v, -9);
        } else {
            assert_int_equal(mp_read_nil(&result), 0);
        }
        assert_ptr_equal(result.p, result.end);
        buf_free(&out);
    }
}

/* Messages longer than WIRE_ERRMSG_BYTES_MAX are cut to it. */
static void test_response_message_truncated(void **state)
{
    char msg[1000];
    struct buf out = {0};
    struct mp_writer w;
    struct wire_response_header h;
    struct mp_reader result;
    (void)state;

    memset(msg, 'm', sizeof msg - 1);
    msg[sizeof msg - 1] = '\0';
    mp_writer_init(&w, &out);
    wire_response_begin(&w, 3, KAPPA_EINVAL, msg);
    mp_put_nil(&w);
    assert_int_equal(w.err, 0);
    assert_int_equal(wire_response_decode(out.data, out.len, &h, &result), 0);
    assert_int_equal(h.message_len, WIRE_ERRMSG_BYTES_MAX);
    assert_memory_equal(h.message, msg, WIRE_ERRMSG_BYTES_MAX);
    buf_free(&out);
}

static const struct bad_body bad_responses[] = {
    {"empty body", {0}, 0},
    {"nil", {0xc0}, 1},
    {"map", {0x80}, 1},
    {"array of 3", {0x93, 0x01, 0x00, 0xc0}, 4},
    {"array of 5", {0x95, 0x01, 0x00, 0xc0, 0xc0, 0xc0}, 6},
    {"negative correlation id", {0x94, 0xff, 0x00, 0xc0, 0xc0}, 5},
    {"correlation id 2^32",
     {0x94, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0xc0, 0xc0},
     13},
    {"correlation id as string", {0x94, 0xa1, '1', 0x00, 0xc0, 0xc0}, 6},
    {"negative error code", {0x94, 0x01, 0xff, 0xc0, 0xc0}, 5},
    {"error code 2^32",
     {0x94, 0x01, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xc0, 0xc0},
     13},
    {"error code as nil", {0x94, 0x01, 0xc0, 0xc0, 0xc0}, 5},
    {"message as int", {0x94, 0x01, 0x00, 0x05, 0xc0}, 5},
    {"message as bin", {0x94, 0x01, 0x00, 0xc4, 0x01, 'x', 0xc0}, 7},
    {"message cut", {0x94, 0x01, 0x00, 0xa5, 'a', 'b'}, 6},
    {"message missing", {0x94, 0x01, 0x00}, 3},
    {"result as int", {0x94, 0x01, 0x00, 0xc0, 0x07}, 5},
    {"result as string", {0x94, 0x01, 0x00, 0xc0, 0xa0}, 5},
    {"result 0xc1", {0x94, 0x01, 0x00, 0xc0, 0xc1}, 5},
};

static void test_response_invalid(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(bad_responses); i++) {
        const struct bad_body *c = &bad_responses[i];
        uint8_t *p = exact_copy(c->bytes, c->n);
        struct wire_response_header h;
        struct mp_reader result;
        int rv = wire_response_decode(p, c->n, &h, &result);
        if (rv != KAPPA_EPROTO) {
            fail_msg("%s: got %d", c->name, rv);
        }
        free(p);
    }
}

/* Out of memory while framing: the writer reports KAPPA_ENOMEM and nothing
 * crashes; the first run with enough memory produces the exact frame. */
static void test_frame_oom(void **state)
{
    struct buf want = {0};
    long n_failures = 0;
    (void)state;
    encode_request(&want, WIRE_API_PRODUCE, 0, 9);
    for (long fail_at = 1; fail_at < 50; fail_at++) {
        struct buf out = {0};
        struct mp_writer w;
        size_t start;
        kappa_alloc_fail_after(fail_at);
        start = wire_frame_begin(&out);
        mp_writer_init(&w, &out);
        wire_request_begin(&w, WIRE_API_PRODUCE, 0, 9);
        mp_put_map(&w, 2);
        mp_put_str(&w, "topic");
        mp_put_str(&w, "events");
        mp_put_str(&w, "records");
        mp_put_bin(&w, "\x01\x02\x03", 3);
        wire_frame_end(&out, start);
        kappa_alloc_fail_after(0);
        if (w.err != 0 || out.len < WIRE_FRAME_HEADER_BYTES) {
            assert_int_equal(w.err, KAPPA_ENOMEM);
            n_failures++;
            buf_free(&out);
            continue;
        }
        assert_int_equal(out.len, want.len);
        assert_memory_equal(out.data, want.data, want.len);
        buf_free(&out);
        break;
    }
    assert_int_equal(n_failures, 1); /* one 256-byte allocation */
    buf_free(&want);
}

static void test_api_names(void **state)
{
    (void)state;
    assert_string_equal(wire_api_name(WIRE_API_HELLO), "hello");
    assert_string_equal(wire_api_name(WIRE_API_PRODUCE), "produce");
    assert_string_equal(wire_api_name(WIRE_API_LIST_OFFSETS), "list_offsets");
    assert_string_equal(wire_api_name(WIRE_API_COUNT), "unknown");
    assert_string_equal(wire_api_name(-1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_peek_prefixes),
        cmocka_unit_test(test_frame_peek_table),
        cmocka_unit_test(test_request_golden_bytes),
        cmocka_unit_test(test_request_round_trip),
        cmocka_unit_test(test_pipelined_frames),
        cmocka_unit_test(test_request_invalid),
        cmocka_unit_test(test_request_prefixes),
        cmocka_unit_test(test_response_golden_bytes),
        cmocka_unit_test(test_response_round_trip),
        cmocka_unit_test(test_response_message_truncated),
        cmocka_unit_test(test_response_invalid),
        cmocka_unit_test(test_frame_oom),
        cmocka_unit_test(test_api_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
