/* Bad input on the wire gets a clear error, never a crash: malformed frames,
 * oversized frames and records, unknown APIs and versions, unknown topics,
 * bad partitions, out-of-range offsets, corrupt batches. Framing errors close
 * only the offending connection; other clients keep working. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/batch.h"
#include "common/endian.h"
#include "common/wire.h"
#include "tests/support/support.h"

static struct test_node node;
static const char *const node_args[] = {"--message.max.bytes", "65536",
                                        "--frame.max.bytes", "1048576", NULL};

static int setup(void **state)
{
    (void)state;
    if (test_node_start(&node, node_args) != 0) {
        return -1;
    }
    struct kappa_client *c = test_client_new(node.addr, NULL);
    int rv = kappa_create_topic(c, "t", 2, 1, NULL, test_timeout_ms(5000));
    kappa_client_free(c);
    return rv;
}

static int teardown(void **state)
{
    (void)state;
    int status = test_node_stop(&node);
    test_node_destroy(&node);
    return status;
}

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t w = write(fd, q, n);
        assert_true(w > 0);
        q += w;
        n -= (size_t)w;
    }
}

/* Reads one response frame into out; returns 0, or -1 on EOF/timeout. */
static int recv_frame(int fd, struct buf *out)
{
    uint8_t hdr[4];
    size_t got = 0, want = 4;
    uint8_t *dst = hdr;
    int phase = 0;
    int64_t deadline = test_now_ms() + test_timeout_ms(5000);

    out->len = 0;
    while (got < want) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int left = (int)(deadline - test_now_ms());
        if (left <= 0 || poll(&pfd, 1, left) <= 0) {
            return -1;
        }
        ssize_t r = read(fd, dst + got, want - got);
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
        if (got == want && phase == 0) {
            phase = 1;
            want = be32_get(hdr);
            assert_int_equal(buf_reserve(out, want), 0);
            dst = out->data;
            got = 0;
        }
    }
    out->len = want;
    return 0;
}

/* True when the peer closed the connection (EOF within the timeout). */
static int peer_closed(int fd)
{
    uint8_t b[256];
    int64_t deadline = test_now_ms() + test_timeout_ms(5000);
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int left = (int)(deadline - test_now_ms());
        if (left <= 0 || poll(&pfd, 1, left) <= 0) {
            return 0;
        }
        ssize_t r = read(fd, b, sizeof b);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            return 1;
        }
    }
}

static void expect_error(int fd, uint32_t corr, int code)
{
    struct buf in = {0};
    struct wire_response_header h;
    struct mp_reader r;
    assert_int_equal(recv_frame(fd, &in), 0);
    assert_int_equal(wire_response_decode(in.data, in.len, &h, &r), 0);
    assert_int_equal(h.correlation_id, corr);
    assert_int_equal(h.error_code, code);
    buf_free(&in);
}

/* Sends a request whose args are written by fill(). */
static void send_request(int fd, uint32_t api, uint32_t version, uint32_t corr,
                         void (*fill)(struct mp_writer *w, void *arg),
                         void *arg)
{
    struct buf out = {0};
    struct mp_writer w;
    mp_writer_init(&w, &out);
    size_t start = wire_frame_begin(&out);
    wire_request_begin(&w, api, version, corr);
    fill(&w, arg);
    wire_frame_end(&out, start);
    assert_int_equal(w.err, 0);
    send_all(fd, out.data, out.len);
    buf_free(&out);
}

static void fill_empty(struct mp_writer *w, void *arg)
{
    (void)arg;
    mp_put_map(w, 0);
}

/* A client on another connection can still produce and read back. */
static void assert_others_work(void)
{
    struct kappa_client *c = test_client_new(node.addr, NULL);
    struct kappa_msg m = {
        .topic = "t", .partition = 0, .value = "alive", .value_len = 5};
    int64_t offset = -1;
    assert_int_equal(kappa_produce_sync(c, &m, &offset, test_timeout_ms(5000)),
                     0);
    assert_true(offset >= 0);
    kappa_client_free(c);
}

static void test_oversized_frame_closes(void **state)
{
    (void)state;
    int fd = test_connect_raw(node.addr);
    uint8_t hdr[4];
    assert_true(fd >= 0);
    be32_put(hdr, 0xFFFFFFF0u);
    send_all(fd, hdr, 4);
    expect_error(fd, 0, KAPPA_ETOOBIG);
    assert_true(peer_closed(fd));
    close(fd);
    assert_others_work();
}

static void test_zero_length_frame_closes(void **state)
{
    (void)state;
    int fd = test_connect_raw(node.addr);
    uint8_t hdr[4] = {0, 0, 0, 0};
    send_all(fd, hdr, 4);
    expect_error(fd, 0, KAPPA_EPROTO);
    assert_true(peer_closed(fd));
    close(fd);
    assert_others_work();
}

static void test_garbage_body_closes(void **state)
{
    (void)state;
    int fd = test_connect_raw(node.addr);
    uint8_t frame[4 + 16];
    be32_put(frame, 16);
    for (int i = 0; i < 16; i++) {
        frame[4 + i] = (uint8_t)(0xc1 ^ (i * 37)); /* 0xc1: never valid */
    }
    send_all(fd, frame, sizeof frame);
    expect_error(fd, 0, KAPPA_EPROTO);
    assert_true(peer_closed(fd));
    close(fd);
    assert_others_work();
}

static void test_hostile_container_length_closes(void **state)
{
    (void)state;
    /* An array declaring 2^32-1 elements in an 8-byte body: must be refused
     * before any allocation. */
    int fd = test_connect_raw(node.addr);
    uint8_t frame[4 + 8] = {0, 0, 0, 8, 0xdd, 0xff, 0xff, 0xff, 0xff, 0, 0, 0};
    send_all(fd, frame, sizeof frame);
    expect_error(fd, 0, KAPPA_EPROTO);
    assert_true(peer_closed(fd));
    close(fd);
    assert_others_work();
}

static void test_truncated_frame_then_hangup(void **state)
{
    (void)state;
    int fd = test_connect_raw(node.addr);
    uint8_t frame[4 + 3] = {0, 0, 0, 100, 0x94, 0x05, 0x00};
    send_all(fd, frame, sizeof frame);
    close(fd);
    assert_others_work();
}

static void test_unknown_api_keeps_connection(void **state)
{
    (void)state;
    int fd = test_connect_raw(node.addr);
    send_request(fd, 99, 0, 7, fill_empty, NULL);
    expect_error(fd, 7, KAPPA_EUNKNOWN_API);
    send_request(fd, WIRE_API_HELLO, 5, 8, fill_empty, NULL);
    expect_error(fd, 8, KAPPA_EVERSION);
    send_request(fd, WIRE_API_HELLO, 0, 9, fill_empty, NULL);
    expect_error(fd, 9, 0);
    close(fd);
}

static void test_pipelined_requests_answered_by_correlation_id(void **state)
{
    (void)state;
    int fd = test_connect_raw(node.addr);
    int seen[64] = {0};
    for (uint32_t i = 0; i < 64; i++) {
        send_request(fd, WIRE_API_HELLO, 0, 1000 + i, fill_empty, NULL);
    }
    for (int i = 0; i < 64; i++) {
        struct buf in = {0};
        struct wire_response_header h;
        struct mp_reader r;
        assert_int_equal(recv_frame(fd, &in), 0);
        assert_int_equal(wire_response_decode(in.data, in.len, &h, &r), 0);
        assert_true(h.correlation_id >= 1000 && h.correlation_id < 1064);
        assert_int_equal(seen[h.correlation_id - 1000], 0);
        seen[h.correlation_id - 1000] = 1;
        buf_free(&in);
    }
    close(fd);
}

struct produce_args {
    const char *topic;
    int partition;
    const uint8_t *records;
    size_t n;
};

static void fill_produce(struct mp_writer *w, void *arg)
{
    struct produce_args *a = arg;
    mp_put_map(w, 3);
    mp_put_str(w, "acks");
    mp_put_int(w, -1);
    mp_put_str(w, "timeout_ms");
    mp_put_int(w, 5000);
    mp_put_str(w, "parts");
    mp_put_array(w, 1);
    mp_put_map(w, 3);
    mp_put_str(w, "topic");
    mp_put_str(w, a->topic);
    mp_put_str(w, "partition");
    mp_put_int(w, a->partition);
    mp_put_str(w, "records");
    mp_put_bin(w, a->records, a->n);
}

/* Sends a produce and returns the first part's error code. */
static int raw_produce(const char *topic, int partition, const uint8_t *p,
                       size_t n)
{
    struct produce_args a = {topic, partition, p, n};
    struct buf in = {0};
    struct wire_response_header h;
    struct mp_reader r;
    uint32_t n_map, n_parts, n_fields;
    int64_t code = -1;
    int fd = test_connect_raw(node.addr);

    assert_true(fd >= 0);
    send_request(fd, WIRE_API_PRODUCE, 0, 42, fill_produce, &a);
    assert_int_equal(recv_frame(fd, &in), 0);
    assert_int_equal(wire_response_decode(in.data, in.len, &h, &r), 0);
    assert_int_equal(h.correlation_id, 42);
    if (h.error_code != 0) {
        code = h.error_code;
        goto out;
    }
    assert_int_equal(mp_read_map(&r, &n_map), 0);
    for (uint32_t i = 0; i < n_map; i++) {
        const char *k;
        uint32_t klen;
        assert_int_equal(mp_read_str(&r, &k, &klen), 0);
        if (!mp_key_is(k, klen, "parts")) {
            assert_int_equal(mp_skip(&r), 0);
            continue;
        }
        assert_int_equal(mp_read_array(&r, &n_parts), 0);
        assert_int_equal(n_parts, 1);
        assert_int_equal(mp_read_map(&r, &n_fields), 0);
        for (uint32_t j = 0; j < n_fields; j++) {
            assert_int_equal(mp_read_str(&r, &k, &klen), 0);
            if (mp_key_is(k, klen, "error")) {
                assert_int_equal(mp_read_int(&r, &code), 0);
            } else {
                assert_int_equal(mp_skip(&r), 0);
            }
        }
    }
out:
    buf_free(&in);
    close(fd);
    return (int)code;
}

static void build_batch(struct batch_builder *b, size_t value_len, int n)
{
    uint8_t *value = calloc(1, value_len);
    assert_non_null(value);
    batch_builder_init(b);
    for (int i = 0; i < n; i++) {
        assert_int_equal(batch_builder_add(b, NULL, 0, value,
                                           (uint32_t)value_len, NULL, 0, 1000),
                         0);
    }
    assert_int_equal(
        batch_builder_finish(b, KAPPA_COMPRESSION_NONE, -1, -1, -1), 0);
    free(value);
}

static void test_produce_errors(void **state)
{
    (void)state;
    struct batch_builder b;
    build_batch(&b, 100, 10);
    assert_int_equal(raw_produce("t", 0, b.buf.data, b.buf.len), 0);
    assert_int_equal(raw_produce("nope", 0, b.buf.data, b.buf.len),
                     KAPPA_EUNKNOWN_TOPIC);
    assert_int_equal(raw_produce("t", 2, b.buf.data, b.buf.len),
                     KAPPA_EBAD_PARTITION);
    assert_int_equal(raw_produce("t", -1, b.buf.data, b.buf.len),
                     KAPPA_EBAD_PARTITION);
    /* A flipped bit in the body fails the CRC. */
    b.buf.data[b.buf.len - 1] ^= 0x01;
    assert_int_equal(raw_produce("t", 0, b.buf.data, b.buf.len), KAPPA_ECRC);
    /* A truncated batch. */
    assert_int_equal(raw_produce("t", 0, b.buf.data, b.buf.len - 5),
                     KAPPA_ECORRUPT);
    batch_builder_free(&b);

    /* Control batches (Raft bookkeeping) are the broker's alone. */
    build_batch(&b, 0, 1);
    b.buf.data[25] = KAPPA_BATCH_ATTR_CONTROL;
    le32_put(b.buf.data + KAPPA_BATCH_OFF_CRC,
             batch_crc_compute(b.buf.data, b.buf.len));
    assert_int_equal(raw_produce("t", 0, b.buf.data, b.buf.len), KAPPA_EINVAL);
    batch_builder_free(&b);

    /* One batch over message.max.bytes (64 KiB on this node). */
    build_batch(&b, 1000, 100);
    assert_int_equal(raw_produce("t", 0, b.buf.data, b.buf.len), KAPPA_ETOOBIG);
    batch_builder_free(&b);
    assert_others_work();
}

static void test_client_sees_errors(void **state)
{
    (void)state;
    struct kappa_client *c = test_client_new(node.addr, NULL);
    struct kappa_msg m = {
        .topic = "missing", .partition = 0, .value = "x", .value_len = 1};
    int64_t offset, low, high;
    struct kappa_record recs[8];
    size_t n = 0;

    assert_int_equal(kappa_produce(c, &m), KAPPA_EUNKNOWN_TOPIC);
    m.topic = "t";
    m.partition = 7;
    assert_int_equal(kappa_produce(c, &m), KAPPA_EBAD_PARTITION);
    assert_int_equal(kappa_assign(c, "missing", 0, 0), KAPPA_EUNKNOWN_TOPIC);
    assert_int_equal(
        kappa_create_topic(c, "bad/name", 1, 1, NULL, test_timeout_ms(5000)),
        KAPPA_ETOPIC_NAME);
    assert_int_equal(
        kappa_create_topic(c, "t", 1, 1, NULL, test_timeout_ms(5000)),
        KAPPA_ETOPIC_EXISTS);
    assert_int_equal(
        kappa_create_topic(c, "zero", 0, 1, NULL, test_timeout_ms(5000)),
        KAPPA_EINVAL);
    assert_int_equal(kappa_delete_topic(c, "missing", test_timeout_ms(5000)),
                     KAPPA_EUNKNOWN_TOPIC);

    /* An offset past the high watermark is an error event. */
    assert_int_equal(
        kappa_watermarks(c, "t", 1, &low, &high, test_timeout_ms(5000)), 0);
    assert_int_equal(kappa_assign(c, "t", 1, high + 1000), 0);
    int64_t deadline = test_now_ms() + test_timeout_ms(5000);
    while (n == 0 && test_now_ms() < deadline) {
        assert_int_equal(kappa_consume(c, 100, recs, 8, &n), 0);
    }
    assert_int_equal(n, 1);
    assert_int_equal(recs[0].err, KAPPA_EOFFSET_RANGE);
    (void)offset;
    kappa_client_free(c);
}

struct fetch_args {
    int64_t offset;
};

static void fill_fetch(struct mp_writer *w, void *arg)
{
    struct fetch_args *a = arg;
    mp_put_map(w, 2);
    mp_put_str(w, "max_wait_ms");
    mp_put_int(w, 0);
    mp_put_str(w, "parts");
    mp_put_array(w, 1);
    mp_put_map(w, 3);
    mp_put_str(w, "topic");
    mp_put_str(w, "t");
    mp_put_str(w, "partition");
    mp_put_int(w, 0);
    mp_put_str(w, "offset");
    mp_put_int(w, a->offset);
}

static int raw_fetch_error(int64_t offset)
{
    struct fetch_args a = {offset};
    struct buf in = {0};
    struct wire_response_header h;
    struct mp_reader r;
    uint32_t n_map, n_parts, n_fields;
    int64_t code = -1;
    int fd = test_connect_raw(node.addr);

    send_request(fd, WIRE_API_FETCH, 0, 5, fill_fetch, &a);
    assert_int_equal(recv_frame(fd, &in), 0);
    assert_int_equal(wire_response_decode(in.data, in.len, &h, &r), 0);
    if (h.error_code != 0) {
        code = h.error_code;
        goto out;
    }
    assert_int_equal(mp_read_map(&r, &n_map), 0);
    for (uint32_t i = 0; i < n_map; i++) {
        const char *k;
        uint32_t klen;
        assert_int_equal(mp_read_str(&r, &k, &klen), 0);
        if (!mp_key_is(k, klen, "parts")) {
            assert_int_equal(mp_skip(&r), 0);
            continue;
        }
        assert_int_equal(mp_read_array(&r, &n_parts), 0);
        assert_int_equal(mp_read_map(&r, &n_fields), 0);
        for (uint32_t j = 0; j < n_fields; j++) {
            assert_int_equal(mp_read_str(&r, &k, &klen), 0);
            if (mp_key_is(k, klen, "error")) {
                assert_int_equal(mp_read_int(&r, &code), 0);
            } else {
                assert_int_equal(mp_skip(&r), 0);
            }
        }
    }
out:
    buf_free(&in);
    close(fd);
    return (int)code;
}

static void test_fetch_offsets(void **state)
{
    (void)state;
    struct kappa_client *c = test_client_new(node.addr, NULL);
    int64_t low, high;
    assert_int_equal(
        kappa_watermarks(c, "t", 0, &low, &high, test_timeout_ms(5000)), 0);
    kappa_client_free(c);
    assert_true(high > 0);
    assert_int_equal(raw_fetch_error(0), 0);
    assert_int_equal(raw_fetch_error(high), 0);
    assert_int_equal(raw_fetch_error(-1), KAPPA_EOFFSET_RANGE);
    assert_int_equal(raw_fetch_error(high + 1), KAPPA_EOFFSET_RANGE);
    assert_int_equal(raw_fetch_error(INT64_MAX), KAPPA_EOFFSET_RANGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_oversized_frame_closes),
        cmocka_unit_test(test_zero_length_frame_closes),
        cmocka_unit_test(test_garbage_body_closes),
        cmocka_unit_test(test_hostile_container_length_closes),
        cmocka_unit_test(test_truncated_frame_then_hangup),
        cmocka_unit_test(test_unknown_api_keeps_connection),
        cmocka_unit_test(test_pipelined_requests_answered_by_correlation_id),
        cmocka_unit_test(test_produce_errors),
        cmocka_unit_test(test_client_sees_errors),
        cmocka_unit_test(test_fetch_offsets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
