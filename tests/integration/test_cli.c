/* The kappa CLI against a real node: topic create/list/describe/delete,
 * produce from stdin, consume with formats and positions, and clear
 * non-zero exits on errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "tests/support/support.h"

static struct test_node node;
static char workdir[TEST_PATH_SIZE];

static int setup(void **state)
{
    (void)state;
    test_tmpdir(workdir, "cli");
    return test_node_start(&node, NULL);
}

static int teardown(void **state)
{
    (void)state;
    int status = test_node_stop(&node);
    test_node_destroy(&node);
    test_rmtree(workdir);
    return status;
}

/* Runs `kappa -b ADDR ARGS` through the shell with stdout and stderr captured
 * into out (NUL-terminated); returns the exit status. */
static int run(char *out, size_t cap, const char *fmt, ...)
{
    char args[2048], cmd[4096];
    va_list ap;
    FILE *f;
    size_t n;
    int status;

    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd '%s' && %s -b %s %s 2>&1", workdir,
             KAPPA_CLI_PATH, node.addr, args);
    f = popen(cmd, "r");
    assert_non_null(f);
    n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void write_file(const char *name, const char *text)
{
    char path[TEST_PATH_SIZE + 64];
    snprintf(path, sizeof path, "%s/%s", workdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_topic_lifecycle(void **state)
{
    (void)state;
    static char out[65536];
    assert_int_equal(run(out, sizeof out, "topic create orders --partitions 3"),
                     0);
    assert_int_equal(run(out, sizeof out, "topic list"), 0);
    assert_non_null(strstr(out, "orders"));
    assert_int_equal(run(out, sizeof out, "topic describe orders"), 0);
    assert_non_null(strstr(out, "orders"));
    assert_int_not_equal(
        run(out, sizeof out, "topic create orders --partitions 3"), 0);
    assert_non_null(strstr(out, "topic already exists"));
    assert_int_equal(run(out, sizeof out, "topic delete orders"), 0);
    assert_int_equal(run(out, sizeof out, "topic list"), 0);
    assert_null(strstr(out, "orders"));
    assert_int_not_equal(run(out, sizeof out, "topic describe orders"), 0);
    assert_non_null(strstr(out, "unknown topic"));
}

static void test_produce_consume(void **state)
{
    (void)state;
    static char out[1 << 20];
    static char input[1 << 16];
    size_t len = 0;
    for (int i = 0; i < 1000; i++) {
        len += (size_t)snprintf(input + len, sizeof input - len,
                                "user%d|event-%04d\n", i % 7, i);
    }
    write_file("in.txt", input);
    assert_int_equal(run(out, sizeof out, "topic create events --partitions 4"),
                     0);
    assert_int_equal(run(out, sizeof out,
                         "produce events --key-separator '|' --compression "
                         "zstd < in.txt"),
                     0);
    assert_non_null(strstr(out, "1000"));

    /* Every line comes back once, keys intact. */
    assert_int_equal(run(out, sizeof out,
                         "consume events --from-beginning --format '%%k|%%v' "
                         "2>/dev/null | sort > out.txt && sort in.txt > "
                         "in.sorted && cmp in.sorted out.txt && echo SAME"),
                     0);
    assert_non_null(strstr(out, "SAME"));

    /* The same key always lands on the same partition. */
    assert_int_equal(run(out, sizeof out,
                         "consume events --from-beginning --format '%%k %%p' "
                         "2>/dev/null | sort -u | awk '{print $1}' | uniq -d "
                         "| wc -l"),
                     0);
    assert_int_equal(atoi(out), 0);

    /* --offset and --count on one partition. */
    assert_int_equal(run(out, sizeof out,
                         "consume events --partition 1 --offset 2 --count 3 "
                         "--format '%%o'"),
                     0);
    assert_string_equal(out, "2\n3\n4\n");

    /* --timestamp far in the future reads nothing and ends. */
    assert_int_equal(run(out, sizeof out,
                         "consume events --partition 0 --timestamp "
                         "99999999999999 2>/dev/null | wc -l"),
                     0);
    assert_int_equal(atoi(out), 0);
}

static void test_errors_exit_nonzero(void **state)
{
    (void)state;
    static char out[65536];
    assert_int_not_equal(run(out, sizeof out, "consume nosuchtopic"), 0);
    assert_non_null(strstr(out, "unknown topic"));
    assert_int_not_equal(
        run(out, sizeof out, "produce nosuchtopic < /dev/null"), 0);
    assert_int_not_equal(run(out, sizeof out, "topic create x --partitions 0"),
                         0);
    assert_int_not_equal(run(out, sizeof out, "no-such-command"), 0);
    assert_int_not_equal(run(out, sizeof out, "topic create 'bad name'"), 0);
    /* Nothing listens on port 1. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s -b 127.0.0.1:1 topic list >/dev/null 2>&1",
             KAPPA_CLI_PATH);
    int status = system(cmd);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_lifecycle),
        cmocka_unit_test(test_produce_consume),
        cmocka_unit_test(test_errors_exit_nonzero),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
