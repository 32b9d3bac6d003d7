/* Field extraction from JSON and msgpack values: every type, dotted paths,
 * missing fields, and malformed values (an error code, never a crash). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "streams/value.h"

static int get(enum kappa_stream_format fmt, const void *v, size_t len,
               const char *name, struct kappa_field *f)
{
    struct value_doc d;
    int rv;
    value_doc_init(&d, fmt, v, len);
    rv = value_doc_get(&d, name, f);
    /* Strings of a JSON parse die with the doc, so compare before. */
    if (rv == 0 && f->type == KAPPA_FIELD_STRING) {
        static char copy[256];
        snprintf(copy, sizeof copy, "%.*s", (int)f->str_len, f->str);
        f->str = copy;
    }
    value_doc_release(&d);
    return rv;
}

static const char JSON[] =
    "{\"ts\":1700000000123,\"user\":\"u42\",\"amount\":12.5,\"ok\":true,"
    "\"none\":null,\"list\":[1,2],\"geo\":{\"country\":\"DE\",\"lat\":52},"
    "\"neg\":-7}";

static void test_json_types(void **state)
{
    (void)state;
    struct kappa_field f;
    size_t n = strlen(JSON);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "ts", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_INT);
    assert_int_equal(f.i, 1700000000123LL);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "user", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_STRING);
    assert_int_equal(f.str_len, 3);
    assert_string_equal(f.str, "u42");
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "amount", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_DOUBLE);
    assert_true(f.d == 12.5);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "ok", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_BOOL);
    assert_int_equal(f.i, 1);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "none", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_NULL);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "list", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_OTHER);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "geo.country", &f), 0);
    assert_string_equal(f.str, "DE");
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "geo.lat", &f), 0);
    assert_int_equal(f.i, 52);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "neg", &f), 0);
    assert_int_equal(f.i, -7);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "missing", &f),
                     KAPPA_ENOENT);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "geo.missing", &f),
                     KAPPA_ENOENT);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "user.x", &f),
                     KAPPA_EPROTO);
    assert_int_equal(get(KAPPA_FORMAT_JSON, JSON, n, "", &f), KAPPA_ENOENT);
}

static void test_json_malformed(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",           "{",
        "{\"ts\":}",  "[1,2,3]",
        "42",         "\"str\"",
        "{\"a\":1}x", "{\"a\":1,}",
        "nul",        "{\"a\":\"\\ud800\"}",
        "\xff\xfe",
    };
    struct kappa_field f;
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        assert_int_equal(
            get(KAPPA_FORMAT_JSON, bad[k], strlen(bad[k]), "a", &f),
            KAPPA_EPROTO);
    }
    assert_int_equal(get(KAPPA_FORMAT_JSON, NULL, 0, "a", &f), KAPPA_EPROTO);
    /* No NUL terminator needed: the length bounds the parse. */
    char buf[8] = {'{', '"', 'a', '"', ':', '7', '}', 'X'};
    assert_int_equal(get(KAPPA_FORMAT_JSON, buf, 7, "a", &f), 0);
    assert_int_equal(f.i, 7);
}

struct sbuf {
    char data[512];
    size_t len;
};

static int sbuf_write(void *data, const char *p, size_t n)
{
    struct sbuf *b = data;
    assert_true(b->len + n <= sizeof b->data);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

static void build_msgpack(struct sbuf *b)
{
    msgpack_packer pk;
    b->len = 0;
    msgpack_packer_init(&pk, b, sbuf_write);
    msgpack_pack_map(&pk, 9);
    pack_str(&pk, "ts");
    msgpack_pack_uint64(&pk, 1700000000123ull);
    pack_str(&pk, "user");
    pack_str(&pk, "u42");
    pack_str(&pk, "f32");
    msgpack_pack_float(&pk, 1.5f);
    pack_str(&pk, "f64");
    msgpack_pack_double(&pk, -2.25);
    pack_str(&pk, "ok");
    msgpack_pack_false(&pk);
    pack_str(&pk, "none");
    msgpack_pack_nil(&pk);
    msgpack_pack_int(&pk, 5); /* a non-string key is skipped */
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_map(&pk, 0);
    pack_str(&pk, "geo");
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "country");
    pack_str(&pk, "DE");
    pack_str(&pk, "neg");
    msgpack_pack_int64(&pk, -70000);
}

static void test_msgpack_types(void **state)
{
    (void)state;
    struct sbuf b;
    struct kappa_field f;
    build_msgpack(&b);
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "ts", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_INT);
    assert_int_equal(f.i, 1700000000123LL);
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "user", &f), 0);
    assert_string_equal(f.str, "u42");
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "f32", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_DOUBLE);
    assert_true(f.d == 1.5);
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "f64", &f), 0);
    assert_true(f.d == -2.25);
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "ok", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_BOOL);
    assert_int_equal(f.i, 0);
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "none", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_NULL);
    assert_int_equal(
        get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "geo.country", &f), 0);
    assert_string_equal(f.str, "DE");
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "geo", &f), 0);
    assert_int_equal(f.type, KAPPA_FIELD_OTHER);
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "neg", &f), 0);
    assert_int_equal(f.i, -70000);
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "nope", &f),
                     KAPPA_ENOENT);
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, b.len, "user.x", &f),
                     KAPPA_EPROTO);
}

/* Every truncation of a valid value and every single-byte corruption gives
 * a result or an error, never a crash (ASan checks the bounds). */
static void test_msgpack_malformed(void **state)
{
    (void)state;
    struct sbuf b;
    struct kappa_field f;
    static const char *const fields[] = {"ts", "neg", "geo.country", "x"};
    build_msgpack(&b);
    for (size_t len = 0; len < b.len; len++) {
        for (size_t k = 0; k < 4; k++) {
            int rv = get(KAPPA_FORMAT_MSGPACK, b.data, len, fields[k], &f);
            assert_true(rv == 0 || rv == KAPPA_EPROTO || rv == KAPPA_ENOENT);
        }
        assert_int_equal(get(KAPPA_FORMAT_MSGPACK, b.data, len, "neg", &f),
                         KAPPA_EPROTO);
    }
    for (size_t pos = 0; pos < b.len; pos++) {
        for (int v = 0; v < 256; v += 17) {
            struct sbuf c = b;
            c.data[pos] = (char)v;
            for (size_t k = 0; k < 4; k++) {
                int rv =
                    get(KAPPA_FORMAT_MSGPACK, c.data, c.len, fields[k], &f);
                assert_true(rv == 0 || rv == KAPPA_EPROTO ||
                            rv == KAPPA_ENOENT);
            }
        }
    }
    /* Not a map at all; deep nesting. */
    const uint8_t arr[] = {0x92, 0x01, 0x02};
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, arr, sizeof arr, "a", &f),
                     KAPPA_EPROTO);
    uint8_t deep[200];
    deep[0] = 0x81;
    deep[1] = 0xa1;
    deep[2] = 'a';
    for (size_t k = 3; k < sizeof deep; k++) {
        deep[k] = 0x91; /* arrays of arrays ... never terminated */
    }
    assert_int_equal(get(KAPPA_FORMAT_MSGPACK, deep, sizeof deep, "b", &f),
                     KAPPA_EPROTO);
}

static void test_public_field(void **state)
{
    (void)state;
    struct kappa_field f;
    assert_int_equal(
        kappa_stream_field(KAPPA_FORMAT_JSON, JSON, strlen(JSON), "user", &f),
        0);
    assert_int_equal(f.str_len, 3);
    assert_memory_equal(f.str, "u42", 3);
    assert_int_equal(kappa_stream_field(KAPPA_FORMAT_JSON, "{", 1, "a", &f),
                     KAPPA_EPROTO);
    assert_int_equal(kappa_stream_field(0, JSON, strlen(JSON), "a", &f),
                     KAPPA_EINVAL);
    assert_int_equal(kappa_stream_format_parse("msgpack"),
                     KAPPA_FORMAT_MSGPACK);
    assert_int_equal(kappa_stream_format_parse("xml"), 0);
    /* Release the thread's scratch parse so the leak checker is quiet. */
    assert_int_equal(
        kappa_stream_field(KAPPA_FORMAT_MSGPACK, "\x80", 1, "a", &f),
        KAPPA_ENOENT);
}

static void test_numbers(void **state)
{
    (void)state;
    int64_t i;
    double d;
    struct kappa_field f = {.type = KAPPA_FIELD_DOUBLE, .d = 1e3};
    assert_int_equal(value_field_int(&f, &i), 0);
    assert_int_equal(i, 1000);
    f.d = 1.5;
    assert_int_equal(value_field_int(&f, &i), KAPPA_EINVAL);
    f.d = 1e300;
    assert_int_equal(value_field_int(&f, &i), KAPPA_EINVAL);
    f.type = KAPPA_FIELD_STRING;
    assert_int_equal(value_field_number(&f, &d), KAPPA_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_types),
        cmocka_unit_test(test_json_malformed),
        cmocka_unit_test(test_msgpack_types),
        cmocka_unit_test(test_msgpack_malformed),
        cmocka_unit_test(test_public_field),
        cmocka_unit_test(test_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
