/* Unit tests for consensus/rmsg: every raft message type round-trips field by
 * field, decoded memory has exactly raft's ownership layout and frees without
 * leaks (a counting raft heap), every prefix of a valid body and random
 * garbage are rejected without crashing, each limit is enforced, and every
 * allocation failure while decoding is reported cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/mp.h"
#include "consensus/rmsg.h"

/* A raft heap that counts live blocks and can fail the Nth allocation. */
static long heap_live;
static long heap_count;
static long heap_fail_at;

static int heap_should_fail(void)
{
    heap_count++;
    return heap_fail_at > 0 && heap_count >= heap_fail_at;
}

static void *heap_malloc(void *data, size_t size)
{
    void *p;
    (void)data;
    if (heap_should_fail()) {
        return NULL;
    }
    p = malloc(size);
    if (p != NULL) {
        heap_live++;
    }
    return p;
}

static void heap_free(void *data, void *ptr)
{
    (void)data;
    if (ptr != NULL) {
        heap_live--;
    }
    free(ptr);
}

static void *heap_calloc(void *data, size_t n, size_t size)
{
    void *p;
    (void)data;
    if (heap_should_fail()) {
        return NULL;
    }
    p = calloc(n, size);
    if (p != NULL) {
        heap_live++;
    }
    return p;
}

static void *heap_realloc(void *data, void *ptr, size_t size)
{
    void *p;
    (void)data;
    if (heap_should_fail()) {
        return NULL;
    }
    p = realloc(ptr, size);
    if (p != NULL && ptr == NULL) {
        heap_live++;
    }
    return p;
}

static void *heap_aligned_alloc(void *data, size_t alignment, size_t size)
{
    void *p;
    (void)data;
    if (heap_should_fail()) {
        return NULL;
    }
    p = aligned_alloc(alignment, size);
    if (p != NULL) {
        heap_live++;
    }
    return p;
}

static void heap_aligned_free(void *data, size_t alignment, void *ptr)
{
    (void)alignment;
    heap_free(data, ptr);
}

static struct raft_heap counting_heap;

static int setup(void **state)
{
    (void)state;
    counting_heap.data = NULL;
    counting_heap.malloc = heap_malloc;
    counting_heap.free = heap_free;
    counting_heap.calloc = heap_calloc;
    counting_heap.realloc = heap_realloc;
    counting_heap.aligned_alloc = heap_aligned_alloc;
    counting_heap.aligned_free = heap_aligned_free;
    raft_heap_set(&counting_heap);
    heap_live = 0;
    heap_count = 0;
    heap_fail_at = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(heap_live, 0);
    raft_heap_set_default();
    return 0;
}

static struct rmsg_limits limits(void)
{
    struct rmsg_limits l;
    rmsg_limits_default(&l);
    return l;
}

/* Decodes from a heap block of exactly n bytes, so AddressSanitizer reports
 * any read past the end. */
static int decode_exact(const uint8_t *p, size_t n,
                        const struct rmsg_limits *lim, uint64_t *group,
                        struct raft_message *m, char *address)
{
    uint8_t *copy = malloc(n > 0 ? n : 1);
    int rv;
    assert_non_null(copy);
    if (n > 0) {
        memcpy(copy, p, n);
    }
    rv = rmsg_decode(copy, n, lim, group, m, address);
    free(copy);
    return rv;
}

static void encode(const struct raft_message *m, uint64_t group,
                   struct buf *out)
{
    buf_init(out);
    assert_int_equal(rmsg_encode(out, group, m), 0);
    assert_true(out->len <= rmsg_encoded_bytes_max(m));
}

static void assert_conf_equal(const struct raft_configuration *a,
                              const struct raft_configuration *b)
{
    assert_int_equal(a->n, b->n);
    for (unsigned i = 0; i < a->n; i++) {
        assert_int_equal(a->servers[i].id, b->servers[i].id);
        assert_string_equal(a->servers[i].address, b->servers[i].address);
        assert_int_equal(a->servers[i].role, b->servers[i].role);
    }
}

static void assert_entries_equal(const struct raft_append_entries *a,
                                 const struct raft_append_entries *b)
{
    void *batch;
    assert_int_equal(a->n_entries, b->n_entries);
    if (b->n_entries == 0) {
        assert_null(b->entries);
        return;
    }
    batch = b->entries[0].batch;
    assert_non_null(batch);
    for (unsigned i = 0; i < a->n_entries; i++) {
        const struct raft_entry *x = &a->entries[i];
        const struct raft_entry *y = &b->entries[i];
        assert_int_equal(x->term, y->term);
        assert_int_equal(x->type, y->type);
        assert_int_equal(x->buf.len, y->buf.len);
        assert_ptr_equal(y->batch, batch); /* one batch for all */
        assert_int_equal((uintptr_t)y->buf.base % 8, 0);
        if (x->buf.len > 0) {
            assert_memory_equal(x->buf.base, y->buf.base, x->buf.len);
        }
    }
}

static void assert_message_equal(const struct raft_message *a,
                                 const struct raft_message *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->server_id, b->server_id);
    assert_string_equal(a->server_address, b->server_address);
    switch (a->type) {
    case RAFT_IO_REQUEST_VOTE:
        assert_int_equal(a->request_vote.term, b->request_vote.term);
        assert_int_equal(a->request_vote.candidate_id,
                         b->request_vote.candidate_id);
        assert_int_equal(a->request_vote.last_log_index,
                         b->request_vote.last_log_index);
        assert_int_equal(a->request_vote.last_log_term,
                         b->request_vote.last_log_term);
        assert_int_equal(a->request_vote.disrupt_leader,
                         b->request_vote.disrupt_leader);
        assert_int_equal(a->request_vote.pre_vote, b->request_vote.pre_vote);
        break;
    case RAFT_IO_REQUEST_VOTE_RESULT:
        assert_int_equal(a->request_vote_result.term,
                         b->request_vote_result.term);
        assert_int_equal(a->request_vote_result.vote_granted,
                         b->request_vote_result.vote_granted);
        assert_int_equal(a->request_vote_result.pre_vote,
                         b->request_vote_result.pre_vote);
        break;
    case RAFT_IO_APPEND_ENTRIES:
        assert_int_equal(a->append_entries.term, b->append_entries.term);
        assert_int_equal(a->append_entries.prev_log_index,
                         b->append_entries.prev_log_index);
        assert_int_equal(a->append_entries.prev_log_term,
                         b->append_entries.prev_log_term);
        assert_int_equal(a->append_entries.leader_commit,
                         b->append_entries.leader_commit);
        assert_entries_equal(&a->append_entries, &b->append_entries);
        break;
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        assert_int_equal(a->append_entries_result.term,
                         b->append_entries_result.term);
        assert_int_equal(a->append_entries_result.rejected,
                         b->append_entries_result.rejected);
        assert_int_equal(a->append_entries_result.last_log_index,
                         b->append_entries_result.last_log_index);
        break;
    case RAFT_IO_INSTALL_SNAPSHOT:
        assert_int_equal(a->install_snapshot.term, b->install_snapshot.term);
        assert_int_equal(a->install_snapshot.last_index,
                         b->install_snapshot.last_index);
        assert_int_equal(a->install_snapshot.last_term,
                         b->install_snapshot.last_term);
        assert_int_equal(a->install_snapshot.conf_index,
                         b->install_snapshot.conf_index);
        assert_conf_equal(&a->install_snapshot.conf, &b->install_snapshot.conf);
        assert_int_equal(a->install_snapshot.data.len,
                         b->install_snapshot.data.len);
        assert_non_null(b->install_snapshot.data.base);
        if (a->install_snapshot.data.len > 0) {
            assert_memory_equal(a->install_snapshot.data.base,
                                b->install_snapshot.data.base,
                                a->install_snapshot.data.len);
        }
        break;
    case RAFT_IO_TIMEOUT_NOW:
        assert_int_equal(a->timeout_now.term, b->timeout_now.term);
        assert_int_equal(a->timeout_now.last_log_index,
                         b->timeout_now.last_log_index);
        assert_int_equal(a->timeout_now.last_log_term,
                         b->timeout_now.last_log_term);
        break;
    default:
        fail();
    }
}

/* Encodes m, decodes it, compares, frees as raft would. */
static void roundtrip(const struct raft_message *m, uint64_t group)
{
    struct rmsg_limits lim = limits();
    struct raft_message out;
    char address[RMSG_ADDRESS_BYTES_MAX + 1];
    uint64_t group_out = 0;
    struct buf b;
    long live = heap_live;

    encode(m, group, &b);
    assert_int_equal(
        decode_exact(b.data, b.len, &lim, &group_out, &out, address), 0);
    assert_int_equal(group_out, group);
    assert_ptr_equal(out.server_address, address);
    assert_message_equal(m, &out);
    rmsg_release(&out);
    assert_int_equal(heap_live, live);
    buf_free(&b);
}

static struct raft_message base_message(unsigned short type)
{
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = type;
    m.server_id = 42;
    m.server_address = "10.1.2.3:9093";
    return m;
}

static void test_request_vote(void **state)
{
    (void)state;
    for (int bits = 0; bits < 4; bits++) {
        struct raft_message m = base_message(RAFT_IO_REQUEST_VOTE);
        m.request_vote.term = 7 + (raft_term)bits;
        m.request_vote.candidate_id = 3;
        m.request_vote.last_log_index = UINT64_MAX;
        m.request_vote.last_log_term = 1ull << 40;
        m.request_vote.disrupt_leader = (bits & 1) != 0;
        m.request_vote.pre_vote = (bits & 2) != 0;
        roundtrip(&m, (uint64_t)bits * 1000000007ull);
    }
}

static void test_request_vote_result(void **state)
{
    (void)state;
    for (int v = 0; v < 6; v++) {
        struct raft_message m = base_message(RAFT_IO_REQUEST_VOTE_RESULT);
        m.request_vote_result.term = 99;
        m.request_vote_result.vote_granted = v % 2;
        m.request_vote_result.pre_vote = (raft_tribool)(v % 3);
        roundtrip(&m, UINT64_MAX);
    }
}

static void test_append_entries_result(void **state)
{
    struct raft_message m = base_message(RAFT_IO_APPEND_ENTRIES_RESULT);
    (void)state;
    m.append_entries_result.term = 5;
    m.append_entries_result.rejected = 0;
    m.append_entries_result.last_log_index = 123456789;
    roundtrip(&m, 0);
    m.append_entries_result.rejected = 17;
    roundtrip(&m, 1);
}

static void test_timeout_now(void **state)
{
    struct raft_message m = base_message(RAFT_IO_TIMEOUT_NOW);
    (void)state;
    m.timeout_now.term = 1;
    m.timeout_now.last_log_index = 2;
    m.timeout_now.last_log_term = 3;
    m.server_address = ""; /* empty addresses are legal */
    roundtrip(&m, 12);
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(i * 31 + seed);
    }
}

static void test_append_entries(void **state)
{
    static const size_t sizes[] = {
        0, 1, 7, 8, 9, 100, 4096, (size_t)1024 * 1024, 0};
    enum { N = sizeof sizes / sizeof sizes[0] };
    struct raft_entry entries[N];
    struct raft_message m = base_message(RAFT_IO_APPEND_ENTRIES);
    (void)state;

    m.append_entries.term = 4;
    m.append_entries.prev_log_index = 100;
    m.append_entries.prev_log_term = 3;
    m.append_entries.leader_commit = 90;
    /* Heartbeat: no entries. */
    roundtrip(&m, 5);
    for (unsigned i = 0; i < N; i++) {
        entries[i].term = 1 + i;
        entries[i].type = (unsigned short)(RAFT_COMMAND + i % 3);
        entries[i].buf.len = sizes[i];
        entries[i].buf.base = sizes[i] > 0 ? malloc(sizes[i]) : NULL;
        entries[i].batch = NULL;
        fill(entries[i].buf.base, sizes[i], i);
    }
    m.append_entries.entries = entries;
    m.append_entries.n_entries = N;
    roundtrip(&m, 5);
    /* One empty entry alone still gets a batch. */
    m.append_entries.entries = &entries[0];
    m.append_entries.n_entries = 1;
    roundtrip(&m, 5);
    for (unsigned i = 0; i < N; i++) {
        free(entries[i].buf.base);
    }
}

static void make_conf(struct raft_configuration *c, unsigned n)
{
    static const int roles[] = {RAFT_VOTER, RAFT_STANDBY, RAFT_SPARE};
    raft_configuration_init(c);
    for (unsigned i = 0; i < n; i++) {
        char addr[32];
        (void)snprintf(addr, sizeof addr, "127.0.0.%u:%u", i + 1, 9000 + i);
        assert_int_equal(raft_configuration_add(c, 10 + i, addr, roles[i % 3]),
                         0);
    }
}

static void test_install_snapshot(void **state)
{
    static const size_t sizes[] = {0, 1, 300, (size_t)1024 * 1024};
    struct raft_message m = base_message(RAFT_IO_INSTALL_SNAPSHOT);
    (void)state;

    m.install_snapshot.term = 8;
    m.install_snapshot.last_index = 1000;
    m.install_snapshot.last_term = 7;
    m.install_snapshot.conf_index = 900;
    for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        make_conf(&m.install_snapshot.conf, k == 0 ? 0 : 2 * k + 1);
        m.install_snapshot.data.len = sizes[k];
        m.install_snapshot.data.base = malloc(sizes[k] + 1);
        fill(m.install_snapshot.data.base, sizes[k], k);
        roundtrip(&m, 77);
        free(m.install_snapshot.data.base);
        raft_configuration_close(&m.install_snapshot.conf);
    }
}

/* A few valid bodies of every type, for the prefix and garbage tests. */
static void sample_bodies(struct buf out[6], struct raft_entry entries[3],
                          uint8_t payload[64])
{
    struct raft_message m;
    fill(payload, 64, 9);
    for (unsigned i = 0; i < 3; i++) {
        entries[i].term = 2;
        entries[i].type = RAFT_COMMAND;
        entries[i].buf.base = payload + (size_t)i * 10;
        entries[i].buf.len = (size_t)i * 10;
        entries[i].batch = NULL;
    }
    for (unsigned type = 1; type <= 6; type++) {
        m = base_message((unsigned short)type);
        m.request_vote.term = 3; /* overlaps every struct's first field */
        if (type == RAFT_IO_APPEND_ENTRIES) {
            m.append_entries.entries = entries;
            m.append_entries.n_entries = 3;
        }
        if (type == RAFT_IO_INSTALL_SNAPSHOT) {
            make_conf(&m.install_snapshot.conf, 3);
            m.install_snapshot.data.base = payload;
            m.install_snapshot.data.len = 64;
        }
        encode(&m, 1234, &out[type - 1]);
        if (type == RAFT_IO_INSTALL_SNAPSHOT) {
            raft_configuration_close(&m.install_snapshot.conf);
        }
    }
}

static void assert_rejected(const uint8_t *p, size_t n)
{
    struct rmsg_limits lim = limits();
    struct raft_message m;
    char address[RMSG_ADDRESS_BYTES_MAX + 1];
    uint64_t group;
    long live = heap_live;
    int rv = decode_exact(p, n, &lim, &group, &m, address);
    assert_true(rv == KAPPA_EPROTO || rv == KAPPA_ETOOBIG);
    assert_int_equal(m.type, 0);
    assert_int_equal(heap_live, live);
}

static void test_every_prefix_rejected(void **state)
{
    struct buf bodies[6];
    struct raft_entry entries[3];
    uint8_t payload[64];
    (void)state;

    sample_bodies(bodies, entries, payload);
    for (unsigned t = 0; t < 6; t++) {
        for (size_t n = 0; n < bodies[t].len; n++) {
            assert_rejected(bodies[t].data, n);
        }
        /* And one trailing byte too many. */
        assert_int_equal(buf_append(&bodies[t], "", 1), 0);
        assert_rejected(bodies[t].data, bodies[t].len);
        buf_free(&bodies[t]);
    }
}

static unsigned test_seed(void)
{
    const char *s = getenv("KAPPA_TEST_SEED");
    unsigned seed = s != NULL ? (unsigned)strtoul(s, NULL, 10) : 20261124u;
    print_message("seed %u (KAPPA_TEST_SEED)\n", seed);
    return seed;
}

static unsigned next_rand(unsigned *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* Random bytes and random mutations of valid bodies: any result is fine,
 * as long as nothing crashes, reads out of bounds or leaks. */
static void test_garbage(void **state)
{
    struct rmsg_limits lim = limits();
    struct buf bodies[6];
    struct raft_entry entries[3];
    uint8_t payload[64];
    uint8_t junk[256];
    unsigned x = test_seed() | 1;
    (void)state;

    sample_bodies(bodies, entries, payload);
    for (int iter = 0; iter < 20000; iter++) {
        struct raft_message m;
        char address[RMSG_ADDRESS_BYTES_MAX + 1];
        uint64_t group;
        const uint8_t *p;
        size_t n;
        int rv;

        if (iter % 2 == 0) {
            n = next_rand(&x) % sizeof junk;
            for (size_t i = 0; i < n; i++) {
                junk[i] = (uint8_t)next_rand(&x);
            }
        } else {
            const struct buf *b = &bodies[next_rand(&x) % 6];
            n = b->len;
            memcpy(junk, b->data, n);
            for (int k = 0; k < 3; k++) {
                junk[next_rand(&x) % n] = (uint8_t)next_rand(&x);
            }
        }
        p = junk;
        rv = decode_exact(p, n, &lim, &group, &m, address);
        if (rv == 0) {
            rmsg_release(&m);
        } else {
            assert_true(rv == KAPPA_EPROTO || rv == KAPPA_ETOOBIG);
        }
        assert_int_equal(heap_live, 0);
    }
    for (unsigned t = 0; t < 6; t++) {
        buf_free(&bodies[t]);
    }
}

/* Hand-written bodies that are well-formed msgpack but break a rule. */
static void put_header(struct mp_writer *w, uint32_t n_values, uint64_t id,
                       const char *address, uint64_t type)
{
    mp_put_array(w, n_values);
    mp_put_uint(w, 1);
    mp_put_uint(w, id);
    mp_put_str(w, address);
    mp_put_uint(w, type);
}

static int decode_buf(const struct buf *b, const struct rmsg_limits *lim)
{
    struct raft_message m;
    char address[RMSG_ADDRESS_BYTES_MAX + 1];
    uint64_t group;
    int rv = decode_exact(b->data, b->len, lim, &group, &m, address);
    if (rv == 0) {
        rmsg_release(&m);
    }
    return rv;
}

static void put_entries(struct mp_writer *w, uint32_t n, uint64_t type)
{
    mp_put_uint(w, 1);
    mp_put_uint(w, 2);
    mp_put_uint(w, 3);
    mp_put_uint(w, 4);
    mp_put_array(w, n);
    for (uint32_t i = 0; i < n; i++) {
        mp_put_array(w, 3);
        mp_put_uint(w, 1);
        mp_put_uint(w, type);
        mp_put_bin(w, "ab", 2);
    }
}

static void put_snapshot(struct mp_writer *w, uint32_t n, uint64_t role,
                         int duplicate)
{
    for (int i = 0; i < 4; i++) {
        mp_put_uint(w, 1);
    }
    mp_put_array(w, n);
    for (uint32_t i = 0; i < n; i++) {
        char addr[32];
        (void)snprintf(addr, sizeof addr, "h%u:1", duplicate ? 0 : i);
        mp_put_array(w, 3);
        mp_put_uint(w, duplicate ? 5 : 5 + i);
        mp_put_str(w, addr);
        mp_put_uint(w, role);
    }
    mp_put_bin(w, "x", 1);
}

static void test_rules(void **state)
{
    struct rmsg_limits lim = limits();
    char long_address[RMSG_ADDRESS_BYTES_MAX + 2];
    struct mp_writer w;
    struct buf b;
    (void)state;

    memset(long_address, 'a', sizeof long_address - 1);
    long_address[sizeof long_address - 1] = '\0';
#define CASE(expect, ...)                                                      \
    do {                                                                       \
        buf_init(&b);                                                          \
        mp_writer_init(&w, &b);                                                \
        __VA_ARGS__;                                                           \
        assert_int_equal(w.err, 0);                                            \
        assert_int_equal(decode_buf(&b, &lim), (expect));                      \
        buf_free(&b);                                                          \
    } while (0)

    /* Control: a valid TimeoutNow. */
    CASE(0, put_header(&w, 7, 1, "a", 6); mp_put_uint(&w, 1);
         mp_put_uint(&w, 2); mp_put_uint(&w, 3));
    /* Server id 0, unknown types, wrong value counts. */
    CASE(KAPPA_EPROTO, put_header(&w, 7, 0, "a", 6); mp_put_uint(&w, 1);
         mp_put_uint(&w, 2); mp_put_uint(&w, 3));
    CASE(KAPPA_EPROTO, put_header(&w, 4, 1, "a", 0));
    CASE(KAPPA_EPROTO, put_header(&w, 7, 1, "a", 7); mp_put_uint(&w, 1);
         mp_put_uint(&w, 2); mp_put_uint(&w, 3));
    CASE(KAPPA_EPROTO, put_header(&w, 8, 1, "a", 6); mp_put_uint(&w, 1);
         mp_put_uint(&w, 2); mp_put_uint(&w, 3); mp_put_uint(&w, 4));
    /* Address too long or with a NUL. */
    CASE(KAPPA_EPROTO, put_header(&w, 7, 1, long_address, 6);
         mp_put_uint(&w, 1); mp_put_uint(&w, 2); mp_put_uint(&w, 3));
    CASE(KAPPA_EPROTO, mp_put_array(&w, 7); mp_put_uint(&w, 1);
         mp_put_uint(&w, 1); mp_put_strn(&w, "a\0b", 3); mp_put_uint(&w, 6);
         mp_put_uint(&w, 1); mp_put_uint(&w, 2); mp_put_uint(&w, 3));
    /* Wrong field types: a negative term, a bool as uint, tribool 3. */
    CASE(KAPPA_EPROTO, put_header(&w, 7, 1, "a", 6); mp_put_int(&w, -1);
         mp_put_uint(&w, 2); mp_put_uint(&w, 3));
    CASE(KAPPA_EPROTO, put_header(&w, 10, 1, "a", 3); mp_put_uint(&w, 1);
         mp_put_uint(&w, 1); mp_put_uint(&w, 1); mp_put_uint(&w, 1);
         mp_put_uint(&w, 1); mp_put_bool(&w, 0));
    CASE(KAPPA_EPROTO, put_header(&w, 7, 1, "a", 4); mp_put_uint(&w, 1);
         mp_put_bool(&w, 1); mp_put_uint(&w, 3));
    /* Entries: valid, bad type, over the limit. */
    CASE(0, put_header(&w, 9, 1, "a", 1); put_entries(&w, 3, RAFT_CHANGE));
    CASE(KAPPA_EPROTO, put_header(&w, 9, 1, "a", 1); put_entries(&w, 3, 0));
    CASE(KAPPA_EPROTO, put_header(&w, 9, 1, "a", 1); put_entries(&w, 3, 4));
    lim.entries_max = 2;
    CASE(KAPPA_ETOOBIG, put_header(&w, 9, 1, "a", 1);
         put_entries(&w, 3, RAFT_COMMAND));
    lim = limits();
    /* Configurations: valid, bad role, duplicate server, over the limit. */
    CASE(0, put_header(&w, 10, 1, "a", 5); put_snapshot(&w, 3, RAFT_SPARE, 0));
    CASE(KAPPA_EPROTO, put_header(&w, 10, 1, "a", 5);
         put_snapshot(&w, 3, 3, 0));
    CASE(KAPPA_EPROTO, put_header(&w, 10, 1, "a", 5);
         put_snapshot(&w, 2, RAFT_VOTER, 1));
    lim.conf_servers_max = 2;
    CASE(KAPPA_ETOOBIG, put_header(&w, 10, 1, "a", 5);
         put_snapshot(&w, 3, RAFT_VOTER, 0));
#undef CASE
}

static void test_encode_invalid(void **state)
{
    struct raft_entry e = {1, 9, {NULL, 0}, NULL};
    struct raft_message m = base_message(0);
    struct buf b;
    (void)state;

    buf_init(&b);
    assert_int_equal(buf_append(&b, "xyz", 3), 0);
    assert_int_equal(rmsg_encode(&b, 1, &m), KAPPA_EINVAL);
    m = base_message(RAFT_IO_TIMEOUT_NOW);
    m.server_address = NULL;
    assert_int_equal(rmsg_encode(&b, 1, &m), KAPPA_EINVAL);
    m = base_message(RAFT_IO_APPEND_ENTRIES);
    m.append_entries.entries = &e;
    m.append_entries.n_entries = 1;
    assert_int_equal(rmsg_encode(&b, 1, &m), KAPPA_EINVAL);
    assert_int_equal(b.len, 3); /* restored */
    /* Out of memory while encoding. */
    m = base_message(RAFT_IO_TIMEOUT_NOW);
    buf_free(&b);
    kappa_alloc_fail_after(1);
    assert_int_equal(rmsg_encode(&b, 1, &m), KAPPA_ENOMEM);
    kappa_alloc_fail_after(0);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

/* Fails the 1st, 2nd, ... raft allocation of a decode until it succeeds:
 * each failure is KAPPA_ENOMEM and leaves nothing allocated. */
static void oom_loop(const struct buf *b)
{
    struct rmsg_limits lim = limits();
    for (long fail_at = 1;; fail_at++) {
        struct raft_message m;
        char address[RMSG_ADDRESS_BYTES_MAX + 1];
        uint64_t group;
        int rv;

        heap_count = 0;
        heap_fail_at = fail_at;
        rv = rmsg_decode(b->data, b->len, &lim, &group, &m, address);
        heap_fail_at = 0;
        if (rv == 0) {
            rmsg_release(&m);
            assert_int_equal(heap_live, 0);
            assert_true(fail_at > 1);
            return;
        }
        assert_int_equal(rv, KAPPA_ENOMEM);
        assert_int_equal(heap_live, 0);
        assert_true(fail_at < 100);
    }
}

static void test_decode_oom(void **state)
{
    struct buf bodies[6];
    struct raft_entry entries[3];
    uint8_t payload[64];
    (void)state;

    sample_bodies(bodies, entries, payload);
    oom_loop(&bodies[RAFT_IO_APPEND_ENTRIES - 1]);
    oom_loop(&bodies[RAFT_IO_INSTALL_SNAPSHOT - 1]);
    for (unsigned t = 0; t < 6; t++) {
        buf_free(&bodies[t]);
    }
}

/* Application messages: round trip, every truncation rejected, raft
 * messages not claimed, and encode limits. */
static void test_app_messages(void **state)
{
    struct buf b = {0};
    const uint8_t *payload;
    size_t len;
    uint64_t from;
    struct buf bodies[6];
    struct raft_entry entries[3];
    uint8_t raw[64];
    (void)state;

    assert_int_equal(rmsg_encode_app(&b, 7, "127.0.0.1:9", "hello", 5), 0);
    assert_int_equal(rmsg_decode_app(b.data, b.len, &from, &payload, &len), 1);
    assert_int_equal(from, 7);
    assert_int_equal(len, 5);
    assert_memory_equal(payload, "hello", 5);
    for (size_t n = 0; n < b.len; n++) {
        assert_true(rmsg_decode_app(b.data, n, &from, &payload, &len) != 1);
    }
    b.data[b.len - 1] ^= 0xff; /* payload bytes are opaque */
    assert_int_equal(rmsg_decode_app(b.data, b.len, &from, &payload, &len), 1);
    b.len = 0;
    assert_int_equal(rmsg_encode_app(&b, 0, "a", "x", 1), KAPPA_EINVAL);
    assert_int_equal(rmsg_encode_app(&b, 1, "a", NULL, 1), KAPPA_EINVAL);
    assert_int_equal(
        rmsg_encode_app(&b, 1, "a", "x", (size_t)RMSG_APP_BYTES_MAX + 1),
        KAPPA_EINVAL);
    assert_int_equal(b.len, 0);
    assert_int_equal(rmsg_encode_app(&b, 1, "a", NULL, 0), 0);
    assert_int_equal(rmsg_decode_app(b.data, b.len, &from, &payload, &len), 1);
    assert_int_equal(len, 0);
    buf_free(&b);
    sample_bodies(bodies, entries, raw);
    for (unsigned t = 0; t < 6; t++) {
        assert_int_equal(rmsg_decode_app(bodies[t].data, bodies[t].len, &from,
                                         &payload, &len),
                         0);
        buf_free(&bodies[t]);
    }
}

static void test_type_names(void **state)
{
    (void)state;
    assert_string_equal(rmsg_type_name(RAFT_IO_APPEND_ENTRIES),
                        "append_entries");
    assert_string_equal(rmsg_type_name(RAFT_IO_TIMEOUT_NOW), "timeout_now");
    assert_string_equal(rmsg_type_name(0), "unknown");
    assert_string_equal(rmsg_type_name(99), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_request_vote, setup, teardown),
        cmocka_unit_test_setup_teardown(test_request_vote_result, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_append_entries_result, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_timeout_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_append_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_snapshot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_prefix_rejected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_oom, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_type_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
