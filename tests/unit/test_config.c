/* Unit tests for broker/config: defaults, every key's parsing and range,
 * the config file format, command-line overrides and the errors main turns
 * into exit status 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "broker/config.h"
#include "common/err.h"
#include "common/log.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static struct broker_config cfg;
static char errmsg[KAPPA_ERRMSG_SIZE];

static int parse(int argc, char **argv, enum config_action *action)
{
    errmsg[0] = '\0';
    return config_parse_args(&cfg, argc, argv, action, errmsg);
}

static void test_defaults(void **state)
{
    (void)state;
    config_default(&cfg);
    assert_int_equal(cfg.node_id, 0);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 9092);
    assert_int_equal(cfg.log_level, KAPPA_LOG_INFO);
    assert_true(cfg.log.segment_bytes == 1ull << 30);
    assert_true(cfg.log.segment_ms == 7LL * 24 * 3600 * 1000);
    assert_true(cfg.log.retention_bytes == -1);
    assert_true(cfg.log.retention_ms == 7LL * 24 * 3600 * 1000);
    assert_int_equal(cfg.log.index_interval_bytes, 4096);
    assert_int_equal(cfg.message_max_bytes, 16u << 20);
    assert_int_equal(cfg.frame_max_bytes, 64u << 20);
    assert_int_equal(cfg.fetch_max_wait_ms, 30000);
    assert_int_equal(cfg.connections_max, 10000);
    assert_int_equal(cfg.num_partitions, 1);
    assert_int_equal(cfg.housekeeping_interval_ms, 10000);
    /* No data directory yet: invalid. */
    assert_int_equal(config_validate(&cfg, errmsg), KAPPA_ECONFIG);
}

struct set_case {
    const char *key;
    const char *value;
    int rv;
};

static void test_set_table(void **state)
{
    static const struct set_case cases[] = {
        {"node.id", "7", 0},
        {"node.id", "-1", KAPPA_ECONFIG},
        {"node.id", "12x", KAPPA_ECONFIG},
        {"node.id", "", KAPPA_ECONFIG},
        {"node.id", "99999999999999999999999", KAPPA_ECONFIG},
        {"data", "/tmp/d", 0},
        {"data", "", KAPPA_ECONFIG},
        {"listen", "0.0.0.0:0", 0},
        {"listen", "[::1]:9092", 0},
        {"listen", "localhost:1", 0},
        {"listen", "127.0.0.1", KAPPA_ECONFIG},
        {"listen", "127.0.0.1:65536", KAPPA_ECONFIG},
        {"listen", "example.com:80", KAPPA_ECONFIG},
        {"listen", ":80", KAPPA_ECONFIG},
        {"log.level", "debug", 0},
        {"log.level", "loud", KAPPA_ECONFIG},
        {"segment.bytes", "1048576", 0},
        {"segment.bytes", "10", KAPPA_ECONFIG},
        {"segment.ms", "0", KAPPA_ECONFIG},
        {"retention.bytes", "-1", 0},
        {"retention.bytes", "-2", KAPPA_ECONFIG},
        {"retention.ms", "-1", 0},
        {"index.interval.bytes", "0", KAPPA_ECONFIG},
        {"message.max.bytes", "1000000", 0},
        {"message.max.bytes", "63", KAPPA_ECONFIG},
        {"frame.max.bytes", "2000000", 0},
        {"fetch.max.wait.ms", "0", 0},
        {"connections.max", "0", KAPPA_ECONFIG},
        {"num.partitions", "10001", KAPPA_ECONFIG},
        {"housekeeping.interval.ms", "1000", 0},
        {"no.such.key", "1", KAPPA_ECONFIG},
    };
    (void)state;
    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        config_default(&cfg);
        errmsg[0] = '\0';
        int rv = config_set(&cfg, cases[i].key, cases[i].value, errmsg);
        if (rv != cases[i].rv) {
            fail_msg("%s = '%s': rv %d, want %d (%s)", cases[i].key,
                     cases[i].value, rv, cases[i].rv, errmsg);
        }
        if (rv != 0) {
            /* One line, naming the key. */
            assert_null(strchr(errmsg, '\n'));
            assert_true(strlen(errmsg) > 0);
        }
    }
}

static void test_listen_parsed(void **state)
{
    (void)state;
    config_default(&cfg);
    assert_int_equal(config_set(&cfg, "listen", "[::1]:0", errmsg), 0);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 0);
    assert_int_equal(config_set(&cfg, "listen", "localhost:9", errmsg), 0);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 9);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_file_and_overrides(void **state)
{
    char path[] = "/tmp/kappa-test-config-XXXXXX";
    int fd = mkstemp(path);
    enum config_action action;
    char *argv[] = {"kappad",    "--config", path,
                    "--node.id", "5",        "--listen=127.0.0.1:0",
                    NULL};
    (void)state;
    assert_true(fd >= 0);
    close(fd);
    write_file(path, "# a comment\n"
                     "\n"
                     "  data = /tmp/somewhere  \n"
                     "node.id=3\n"
                     "retention.ms = 1000\n"
                     "\t# indented comment\n");
    assert_int_equal(parse(6, argv, &action), 0);
    assert_int_equal(action, CONFIG_RUN);
    assert_string_equal(cfg.data_dir, "/tmp/somewhere");
    assert_int_equal(cfg.node_id, 5); /* the command line wins */
    assert_true(cfg.log.retention_ms == 1000);
    assert_int_equal(cfg.listen_port, 0);
    unlink(path);
}

static void test_file_errors(void **state)
{
    static const char *const bad[] = {
        "data = /x\nbogus = 1\n",
        "data = /x\nnode.id = abc\n",
        "data = /x\njust words\n",
    };
    char path[] = "/tmp/kappa-test-config-XXXXXX";
    int fd = mkstemp(path);
    (void)state;
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
        write_file(path, bad[i]);
        config_default(&cfg);
        assert_int_equal(config_load_file(&cfg, path, errmsg), KAPPA_ECONFIG);
        /* "FILE:2: ..." */
        assert_non_null(strstr(errmsg, ":2: "));
    }
    unlink(path);
    config_default(&cfg);
    assert_int_equal(config_load_file(&cfg, path, errmsg), KAPPA_ECONFIG);
}

static void test_args(void **state)
{
    enum config_action action;
    char *ok[] = {"kappad", "--data", "/d", "--listen", "127.0.0.1:0", NULL};
    char *no_data[] = {"kappad", "--listen", "127.0.0.1:0", NULL};
    char *missing_value[] = {"kappad", "--data", NULL};
    char *positional[] = {"kappad", "data", NULL};
    char *unknown[] = {"kappad", "--data", "/d", "--colour", "red", NULL};
    char *help[] = {"kappad", "--bogus", "--help", NULL};
    char *version[] = {"kappad", "-V", NULL};
    char *small_frame[] = {"kappad",  "--data", "/d", "--frame.max.bytes",
                           "1048576", NULL};
    (void)state;
    assert_int_equal(parse(5, ok, &action), 0);
    assert_string_equal(cfg.data_dir, "/d");
    assert_int_equal(parse(3, no_data, &action), KAPPA_ECONFIG);
    assert_non_null(strstr(errmsg, "data"));
    assert_int_equal(parse(2, missing_value, &action), KAPPA_ECONFIG);
    assert_int_equal(parse(2, positional, &action), KAPPA_ECONFIG);
    assert_int_equal(parse(5, unknown, &action), KAPPA_ECONFIG);
    assert_non_null(strstr(errmsg, "colour"));
    /* --help wins even after a bad flag would have been seen. */
    assert_int_equal(parse(3, help, &action), KAPPA_ECONFIG);
    help[1] = "--help";
    assert_int_equal(parse(2, help, &action), 0);
    assert_int_equal(action, CONFIG_HELP);
    assert_int_equal(parse(2, version, &action), 0);
    assert_int_equal(action, CONFIG_VERSION);
    /* 1 MiB frames cannot carry 16 MiB batches. */
    assert_int_equal(parse(5, small_frame, &action), KAPPA_ECONFIG);
    assert_non_null(strstr(errmsg, "frame.max.bytes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_set_table),
        cmocka_unit_test(test_listen_parsed),
        cmocka_unit_test(test_file_and_overrides),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
