/* The HTTP metrics endpoint (metrics.listen): /metrics parses as Prometheus
 * text with HELP/TYPE lines and its counters follow the traffic, /ready
 * answers 200, and garbage, oversized or unknown requests get 400/404
 * without hurting the broker. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tests/support/support.h"

#define N_RECORDS  500
#define TOPIC      "mtopic"
#define RESP_MAX   (1024 * 1024)
#define HEAD_LIMIT 8192

static struct test_node node;
static char metrics_addr[TEST_ADDR_SIZE];
static char resp[RESP_MAX];

static int read_metrics_addr(void *arg)
{
    char path[TEST_PATH_SIZE + 32];
    FILE *f;
    (void)arg;
    snprintf(path, sizeof path, "%s/metrics.addr", node.dir);
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    if (fgets(metrics_addr, sizeof metrics_addr, f) == NULL) {
        metrics_addr[0] = '\0';
    }
    fclose(f);
    metrics_addr[strcspn(metrics_addr, "\n")] = '\0';
    return metrics_addr[0] != '\0';
}

static int setup(void **state)
{
    const char *args[] = {"--metrics.listen", "127.0.0.1:0", NULL};
    (void)state;
    if (test_node_start(&node, args) != 0) {
        return -1;
    }
    return test_wait_until(read_metrics_addr, NULL, 100, 50) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int status = test_node_stop(&node);
    test_node_destroy(&node);
    return status;
}

/* Sends req (len bytes) and reads the whole response until the server
 * closes. Returns the HTTP status code, or -1; the body starts at *body. */
static int http(const void *req, size_t len, const char **body)
{
    struct timeval tv = {test_timeout_ms(5000) / 1000, 0};
    size_t got = 0;
    ssize_t n;
    int code = -1;
    int fd = test_connect_raw(metrics_addr);

    *body = NULL;
    if (fd < 0) {
        return -1;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* The server may answer 400 and close before taking all of it. */
    (void)send(fd, req, len, MSG_NOSIGNAL);
    while (got < sizeof resp - 1 &&
           (n = recv(fd, resp + got, sizeof resp - 1 - got, 0)) > 0) {
        got += (size_t)n;
    }
    close(fd);
    resp[got] = '\0';
    if (sscanf(resp, "HTTP/1.1 %d", &code) != 1) {
        return -1;
    }
    *body = strstr(resp, "\r\n\r\n");
    if (*body != NULL) {
        *body += 4;
    }
    return code;
}

static int get(const char *path, const char **body)
{
    char req[256];
    int n =
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    return http(req, (size_t)n, body);
}

/* Checks every line: "# HELP name text", "# TYPE name type" or
 * "name{labels} value" / "name value" with a numeric value. */
static void check_format(const char *text)
{
    const char *line = text;
    int n_samples = 0;
    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        char buf[1024];
        size_t len;
        assert_non_null(end); /* every line ends with \n */
        len = (size_t)(end - line);
        assert_true(len > 0 && len < sizeof buf);
        memcpy(buf, line, len);
        buf[len] = '\0';
        if (buf[0] == '#') {
            assert_true(strncmp(buf, "# HELP kappa_", 13) == 0 ||
                        strncmp(buf, "# TYPE kappa_", 13) == 0);
        } else {
            char *sp = strrchr(buf, ' ');
            char *num_end;
            char *p = buf;
            assert_non_null(sp);
            (void)strtod(sp + 1, &num_end);
            assert_true(num_end != sp + 1 && *num_end == '\0');
            while (isalnum((unsigned char)*p) || *p == '_') {
                p++;
            }
            assert_true(p > buf);
            if (*p == '{') {
                assert_int_equal(sp[-1], '}');
                p = sp;
            }
            assert_true(p == sp);
            n_samples++;
        }
        line = end + 1;
    }
    assert_true(n_samples > 10);
}

/* The value of the sample whose "name{labels}" part is exactly key. */
static double sample(const char *text, const char *key)
{
    size_t klen = strlen(key);
    const char *line = text;
    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            return strtod(line + klen + 1, NULL);
        }
        if (end == NULL) {
            break;
        }
        line = end + 1;
    }
    fail_msg("sample %s missing", key);
    return -1;
}

static void check_family(const char *text, const char *name, const char *type)
{
    char help[128], tline[128];
    snprintf(help, sizeof help, "# HELP %s ", name);
    snprintf(tline, sizeof tline, "# TYPE %s %s\n", name, type);
    assert_non_null(strstr(text, help));
    assert_non_null(strstr(text, tline));
}

static void produce_and_consume(void)
{
    struct kappa_client *c = test_client_new(node.addr, NULL);
    struct kappa_record recs[256];
    int64_t deadline;
    long seen = 0;

    assert_int_equal(
        kappa_create_topic(c, TOPIC, 1, 1, NULL, test_timeout_ms(5000)), 0);
    for (long i = 0; i < N_RECORDS; i++) {
        struct kappa_msg m = {
            .topic = TOPIC,
            .partition = 0,
            .value = &i,
            .value_len = sizeof i,
        };
        int rv;
        while ((rv = kappa_produce(c, &m)) == KAPPA_EBUSY) {
            kappa_poll(c, 10);
        }
        assert_int_equal(rv, 0);
    }
    assert_int_equal(kappa_flush(c, test_timeout_ms(30000)), 0);
    assert_int_equal(kappa_assign(c, TOPIC, 0, KAPPA_OFFSET_BEGINNING), 0);
    deadline = test_now_ms() + test_timeout_ms(30000);
    while (seen < N_RECORDS && test_now_ms() < deadline) {
        size_t n = 0;
        assert_int_equal(kappa_consume(c, 100, recs, 256, &n), 0);
        seen += (long)n;
    }
    assert_int_equal(seen, N_RECORDS);
    kappa_client_free(c);
}

#define PART "{topic=\"" TOPIC "\",partition=\"0\"}"

static void test_metrics_scrape(void **state)
{
    const char *body;
    (void)state;

    assert_int_equal(get("/ready", &body), 200);
    assert_string_equal(body, "ready\n");
    produce_and_consume();
    assert_int_equal(get("/metrics?x=1", &body), 200);
    assert_non_null(strstr(resp, "Content-Type: text/plain; version=0.0.4"));
    check_format(body);
    check_family(body, "kappa_connections", "gauge");
    check_family(body, "kappa_bytes_in_total", "counter");
    check_family(body, "kappa_bytes_out_total", "counter");
    check_family(body, "kappa_requests_total", "counter");
    check_family(body, "kappa_fsyncs_total", "counter");
    check_family(body, "kappa_partitions_hosted", "gauge");
    check_family(body, "kappa_raft_groups", "gauge");
    check_family(body, "kappa_partition_high_watermark", "gauge");
    check_family(body, "kappa_partition_log_end_offset", "gauge");
    check_family(body, "kappa_partition_is_leader", "gauge");
    check_family(body, "kappa_produce_records_total", "counter");
    check_family(body, "kappa_fetch_records_total", "counter");
    check_family(body, "kappa_produce_latency_seconds", "histogram");
    assert_true(sample(body, "kappa_produce_records_total" PART) == N_RECORDS);
    assert_true(sample(body, "kappa_fetch_records_total" PART) >= N_RECORDS);
    assert_true(sample(body, "kappa_partition_high_watermark" PART) ==
                N_RECORDS);
    assert_true(sample(body, "kappa_partition_log_end_offset" PART) ==
                N_RECORDS);
    assert_true(sample(body, "kappa_partition_is_leader" PART) == 1);
    assert_true(sample(body, "kappa_partitions_hosted") == 1);
    assert_true(sample(body, "kappa_raft_groups") == 0);
    assert_true(sample(body, "kappa_requests_total{api=\"produce\"}") >= 1);
    assert_true(sample(body, "kappa_requests_total{api=\"fetch\"}") >= 1);
    assert_true(sample(body, "kappa_requests_total{api=\"create_topic\"}") ==
                1);
    assert_true(sample(body, "kappa_bytes_in_total") > N_RECORDS * 8);
    assert_true(sample(body, "kappa_bytes_out_total") > N_RECORDS * 8);
    assert_true(sample(body, "kappa_fsyncs_total") >= 1);
    assert_true(sample(body, "kappa_produce_latency_seconds_count" PART) >= 1);
    assert_true(sample(body,
                       "kappa_produce_latency_seconds_bucket{topic=\"" TOPIC
                       "\",partition=\"0\",le=\"+Inf\"}") ==
                sample(body, "kappa_produce_latency_seconds_count" PART));
}

static void test_metrics_bad_requests(void **state)
{
    static char big[HEAD_LIMIT + 100];
    const char garbage[] = "\x00\x01\xff garbage\r\n\r\n";
    const char *body;
    struct kappa_client *c;
    int64_t offset = -1;
    long v = 7;
    struct kappa_msg m = {
        .topic = "after", .partition = 0, .value = &v, .value_len = sizeof v};
    (void)state;

    assert_int_equal(http(garbage, sizeof garbage - 1, &body), 400);
    memset(big, 'A', sizeof big);
    assert_int_equal(http(big, sizeof big, &body), 400);
    assert_int_equal(get("/nope", &body), 404);
    assert_int_equal(http("POST /metrics HTTP/1.1\r\n\r\n", 26, &body), 404);
    assert_int_equal(http("GET /metrics\r\n\r\n", 16, &body), 400);
    /* The broker and the endpoint keep working. */
    c = test_client_new(node.addr, NULL);
    assert_int_equal(
        kappa_create_topic(c, "after", 1, 1, NULL, test_timeout_ms(5000)), 0);
    assert_int_equal(kappa_produce_sync(c, &m, &offset, test_timeout_ms(5000)),
                     0);
    assert_int_equal(offset, 0);
    kappa_client_free(c);
    assert_int_equal(get("/ready", &body), 200);
    assert_int_equal(get("/metrics", &body), 200);
    assert_true(sample(body, "kappa_produce_records_total{topic=\"after\","
                             "partition=\"0\"}") == 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_scrape),
        cmocka_unit_test(test_metrics_bad_requests),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
