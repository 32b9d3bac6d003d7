/* kappad dump: a single node (lz4 and uncompressed topics) is stopped and
 * dumped as JSON lines; every acknowledged record must appear once at its
 * offset with the CRC-32C of its key and value, every batch's CRC must
 * check, a running node's directory is refused, and a flipped byte is
 * reported without a crash. Then a three-node cluster at RF=3: every
 * node's copy of the partition, dumped after all stop, holds the same
 * records on the offsets they share up to their commit points. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "tests/support/support.h"

#define N_RECORDS   600
#define N_CLUSTER   400
#define OFFSETS_MAX 4096
#define LINE_MAX_   8192

struct sent {
    int64_t offset;
    int err;
};

static struct sent sent[N_RECORDS];
static long n_delivered;

/* One partition as read back from a dump. */
struct dumped {
    int64_t start, end, commit;
    long n_batches, n_bad_batches, n_lz4, n_errors;
    long n_records;
    uint32_t rec_crc[OFFSETS_MAX];
    uint32_t value_crc[OFFSETS_MAX];
    char has[OFFSETS_MAX];
};

static uint32_t crc32c_sw(const void *data, size_t n)
{
    const uint8_t *p = data;
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}

static size_t make_value(long i, char *v)
{
    return (size_t)snprintf(v, 64, "value-%ld-%s", i,
                            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
}

static void on_delivery(const struct kappa_delivery *d, void *arg)
{
    (void)arg;
    long i = (long)(intptr_t)d->opaque;
    if (i >= 0 && i < N_RECORDS) {
        sent[i].offset = d->offset;
        sent[i].err = d->err;
    }
    n_delivered++;
}

static void produce(const char *addr, const char *topic, int rf, long n,
                    const char *compression)
{
    const char *props[] = {"compression", compression, "linger.ms", "2",
                           "acks",        "all",       NULL};
    struct kappa_client *c = test_client_new(addr, props);
    char value[64], key[32];

    assert_int_equal(
        kappa_create_topic(c, topic, 1, rf, NULL, test_timeout_ms(20000)), 0);
    kappa_set_delivery_cb(c, on_delivery, NULL);
    n_delivered = 0;
    for (long i = 0; i < n; i++) {
        struct kappa_msg m = {
            .topic = topic,
            .partition = 0,
            .key = key,
            .key_len = (size_t)snprintf(key, sizeof key, "k%ld", i),
            .value = value,
            .value_len = make_value(i, value),
            .timestamp_ms = 1700000000000 + i,
            .opaque = (void *)(intptr_t)i,
        };
        int rv;
        sent[i].offset = -1;
        sent[i].err = -1;
        while ((rv = kappa_produce(c, &m)) == KAPPA_EBUSY) {
            kappa_poll(c, 10);
        }
        assert_int_equal(rv, 0);
    }
    assert_int_equal(kappa_flush(c, test_timeout_ms(60000)), 0);
    assert_int_equal(n_delivered, n);
    for (long i = 0; i < n; i++) {
        assert_int_equal(sent[i].err, 0);
        assert_true(sent[i].offset >= 0 && sent[i].offset < OFFSETS_MAX);
    }
    kappa_client_free(c);
}

/* Runs kappad dump with args into out_path; returns the exit status. */
static int run_dump(const char *dir, const char *args, const char *out_path)
{
    char cmd[2048];
    int st;
    snprintf(cmd, sizeof cmd, "%s dump %s %s >%s 2>%s.err", KAPPAD_PATH, dir,
             args, out_path, out_path);
    st = system(cmd);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static int64_t json_int(const char *line, const char *field)
{
    char pat[64];
    const char *p;
    snprintf(pat, sizeof pat, "\"%s\":", field);
    p = strstr(line, pat);
    assert_non_null(p);
    return strtoll(p + strlen(pat), NULL, 10);
}

/* Reads partition key from a JSON dump file into *d. */
static void read_dump(const char *path, const char *key, struct dumped *d)
{
    char line[LINE_MAX_], want[128];
    FILE *f = fopen(path, "r");
    int in_part = 0, n_headers = 0;
    memset(d, 0, sizeof *d);
    assert_non_null(f);
    snprintf(want, sizeof want, "{\"partition\":\"%s\",", key);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "{\"kappa_dump\":1,", 16) == 0) {
            n_headers++;
        } else if (strncmp(line, "{\"partition\":", 13) == 0) {
            in_part = strncmp(line, want, strlen(want)) == 0;
            if (in_part) {
                d->start = json_int(line, "start");
                d->end = json_int(line, "end");
                d->commit = json_int(line, "commit");
            }
        } else if (!in_part) {
            continue;
        } else if (strncmp(line, "{\"batch\":", 9) == 0) {
            d->n_batches++;
            d->n_bad_batches += strstr(line, "\"crc\":\"ok\"") == NULL;
            d->n_lz4 += strstr(line, "\"compression\":\"lz4\"") != NULL;
        } else if (strncmp(line, "{\"error\":", 9) == 0) {
            d->n_errors++;
        } else if (line[0] == '[') {
            long long off, ts;
            unsigned rc, kc, vc;
            int n = sscanf(line, "[%lld,\"%8x\",%lld,\"%8x\",\"%8x\"", &off,
                           &rc, &ts, &kc, &vc);
            if (n < 3) {
                fail_msg("bad record line: %s", line);
            }
            assert_true(off >= 0 && off < OFFSETS_MAX);
            assert_false(d->has[off]);
            d->has[off] = 1;
            d->rec_crc[off] = rc;
            d->value_crc[off] = n == 5 ? vc : 0;
            d->n_records++;
        } else {
            fail_msg("unexpected dump line: %s", line);
        }
    }
    fclose(f);
    assert_int_equal(n_headers, 1);
}

static void check_single_topic(struct test_node *node, const char *topic,
                               const char *out, int expect_lz4)
{
    char args[128], key[64];
    struct dumped *d = calloc(1, sizeof *d);
    assert_non_null(d);
    snprintf(args, sizeof args, "--topic %s --format json --up-to-commit",
             topic);
    assert_int_equal(run_dump(node->dir, args, out), 0);
    snprintf(key, sizeof key, "%s/0", topic);
    read_dump(out, key, d);
    assert_int_equal(d->start, 0);
    assert_int_equal(d->end, N_RECORDS);
    assert_int_equal(d->commit, N_RECORDS);
    assert_int_equal(d->n_records, N_RECORDS);
    assert_int_equal(d->n_bad_batches, 0);
    assert_int_equal(d->n_errors, 0);
    assert_true(d->n_batches >= 1);
    if (expect_lz4) {
        assert_int_equal(d->n_lz4, d->n_batches);
    }
    for (long i = 0; i < N_RECORDS; i++) {
        char value[64];
        size_t n = make_value(i, value);
        assert_true(d->has[sent[i].offset]);
        assert_int_equal(d->value_crc[sent[i].offset], crc32c_sw(value, n));
    }
    free(d);
}

/* Flips one byte inside the first batch's body of topic/0's first
 * segment. */
static void corrupt_first_batch(const char *dir, const char *topic)
{
    char path[1024];
    FILE *f;
    int c;
    snprintf(path, sizeof path, "%s/topics/%s/0/%020d.log", dir, topic, 0);
    f = fopen(path, "r+b");
    assert_non_null(f);
    assert_int_equal(fseek(f, 80, SEEK_SET), 0);
    c = fgetc(f);
    assert_int_equal(fseek(f, 80, SEEK_SET), 0);
    assert_true(fputc(c ^ 0x5a, f) != EOF);
    assert_int_equal(fclose(f), 0);
}

static void test_single(void **state)
{
    struct test_node node;
    char out[1024];
    struct dumped *d = calloc(1, sizeof *d);
    (void)state;
    assert_non_null(d);
    memset(&node, 0, sizeof node);
    assert_int_equal(test_node_start(&node, NULL), 0);
    produce(node.addr, "dz", 1, N_RECORDS, "lz4");
    produce(node.addr, "dn", 1, N_RECORDS, "none");
    snprintf(out, sizeof out, "%s.dump.jsonl", node.dir);

    /* A running node holds the lock: refused, with a clear message. */
    assert_int_equal(run_dump(node.dir, "", out), 1);
    assert_int_equal(test_node_stop(&node), 0);

    check_single_topic(&node, "dz", out, 1);
    check_single_topic(&node, "dn", out, 0);
    /* Text format and --values run too. */
    assert_int_equal(run_dump(node.dir, "--format text --values", out), 0);

    corrupt_first_batch(node.dir, "dn");
    assert_int_equal(run_dump(node.dir, "--topic dn --values", out), 1);
    read_dump(out, "dn/0", d);
    assert_int_equal(d->n_bad_batches, 1);
    assert_true(d->n_errors >= 1);
    assert_true(d->n_records < N_RECORDS);
    assert_false(d->has[0]);

    remove(out);
    snprintf(out + strlen(out), 8, ".err");
    remove(out);
    test_node_destroy(&node);
    free(d);
}

static void test_cluster(void **state)
{
    static struct test_cluster cl;
    struct dumped *d[3];
    char out[3][1024];
    int64_t lo = 0, hi = INT64_MAX;
    int n_full = 0;
    (void)state;
    assert_int_equal(test_cluster_start(&cl, 3), 0);
    produce(cl.bootstrap, "rep", 3, N_CLUSTER, "lz4");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(test_node_stop(&cl.nodes[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        char args[128];
        d[i] = calloc(1, sizeof *d[i]);
        assert_non_null(d[i]);
        snprintf(out[i], sizeof out[i], "%s.dump.jsonl", cl.nodes[i].dir);
        snprintf(args, sizeof args, "--up-to-commit --node n%d", i + 1);
        if (run_dump(cl.nodes[i].dir, args, out[i]) != 0) {
            char cmd[1100];
            snprintf(cmd, sizeof cmd, "cat %s.err >&2", out[i]);
            (void)system(cmd);
            fail_msg("dump of node %d failed", i + 1);
        }
        read_dump(out[i], "rep/0", d[i]);
        assert_int_equal(d[i]->n_bad_batches, 0);
        lo = d[i]->start > lo ? d[i]->start : lo;
        hi = d[i]->commit < hi ? d[i]->commit : hi;
        /* Control batches take offsets too, so a full replica holds more
         * than the produced records. */
        n_full += d[i]->n_records > N_CLUSTER;
    }
    /* acks=all: a majority has every record. */
    assert_true(n_full >= 2);
    assert_true(hi > lo);
    /* Every entry must be byte-identical, offset 0 included: the bootstrap
     * configuration each replica writes itself has its raft padding zeroed
     * (consensus/rio.c, zero_configuration_padding). */
    for (int64_t o = lo; o < hi; o++) {
        assert_true(d[0]->has[o]);
        for (int i = 1; i < 3; i++) {
            assert_true(d[i]->has[o]);
            if (d[i]->rec_crc[o] != d[0]->rec_crc[o]) {
                fail_msg("offset %" PRId64 " differs: node 1 %08x node %d "
                         "%08x (%s, %s)",
                         o, d[0]->rec_crc[o], i + 1, d[i]->rec_crc[o], out[0],
                         out[i]);
            }
        }
    }
    for (long i = 0; i < N_CLUSTER; i++) {
        char value[64];
        size_t n = make_value(i, value);
        int64_t o = sent[i].offset;
        for (int k = 0; k < 3; k++) {
            if (d[k]->has[o]) {
                assert_int_equal(d[k]->value_crc[o], crc32c_sw(value, n));
            }
        }
    }
    for (int i = 0; i < 3; i++) {
        if (getenv("KAPPA_TEST_KEEP") == NULL) {
            remove(out[i]);
            snprintf(out[i] + strlen(out[i]), 8, ".err");
            remove(out[i]);
        }
        free(d[i]);
    }
    test_cluster_destroy(&cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
