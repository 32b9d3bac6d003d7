/* Writes the seed corpus of the fuzz targets: a few small valid frames and
 * batches. The output is committed under tests/fuzz/corpus/; run.sh
 * --regen-corpus rebuilds this program and rewrites it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/batch.h"
#include "common/buf.h"
#include "common/mp.h"
#include "common/wire.h"

static const char *out_dir;

static void write_file(const char *target, const char *name, const void *p,
                       size_t n)
{
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "gen_corpus: cannot write %s\n", path);
        exit(1);
    }
}

/* Appends one finished batch to out. */
static void add_batch(struct buf *out, int compression, int n_records,
                      int with_headers, int64_t base_offset)
{
    static const struct record_header headers[] = {
        {(const uint8_t *)"trace", 5, (const uint8_t *)"abc", 3},
        {(const uint8_t *)"gone", 4, NULL, 0},
    };
    struct batch_builder b;
    batch_builder_init(&b);
    for (int i = 0; i < n_records; i++) {
        char key[16], value[64];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(value, sizeof value, "value %d value %d value", i, i);
        if (batch_builder_add(&b, i % 5 == 4 ? NULL : key,
                              (uint32_t)strlen(key), i % 7 == 6 ? NULL : value,
                              (uint32_t)strlen(value),
                              with_headers ? headers : NULL,
                              with_headers ? 2 : 0, 1700000000000 + i) != 0) {
            exit(1);
        }
    }
    if (batch_builder_finish(&b, compression, 5, 0, 0) != 0 ||
        buf_append(out, b.buf.data, b.buf.len) != 0) {
        exit(1);
    }
    batch_set_base_offset(out->data + out->len - b.buf.len, base_offset);
    batch_builder_free(&b);
}

static void gen_batches(void)
{
    struct buf b = {0};
    add_batch(&b, KAPPA_COMPRESSION_NONE, 3, 0, 0);
    write_file("fuzz_batch", "none-3", b.data, b.len);
    b.len = 0;
    add_batch(&b, KAPPA_COMPRESSION_NONE, 4, 1, 10);
    write_file("fuzz_batch", "none-headers", b.data, b.len);
    b.len = 0;
    add_batch(&b, KAPPA_COMPRESSION_LZ4, 30, 0, 0);
    write_file("fuzz_batch", "lz4-30", b.data, b.len);
    b.len = 0;
    add_batch(&b, KAPPA_COMPRESSION_ZSTD, 30, 1, 0);
    write_file("fuzz_batch", "zstd-30", b.data, b.len);
    b.len = 0;
    add_batch(&b, KAPPA_COMPRESSION_NONE, 2, 0, 0);
    add_batch(&b, KAPPA_COMPRESSION_LZ4, 20, 0, 2);
    add_batch(&b, KAPPA_COMPRESSION_ZSTD, 20, 0, 22);
    write_file("fuzz_batch", "three", b.data, b.len);
    buf_free(&b);
}

static void produce_request(struct buf *out, int compression)
{
    struct buf records = {0};
    struct mp_writer w;
    size_t start = wire_frame_begin(out);
    add_batch(&records, compression, 5, compression == 0, 0);
    mp_writer_init(&w, out);
    wire_request_begin(&w, WIRE_API_PRODUCE, 0, 7);
    mp_put_map(&w, 3);
    mp_put_str(&w, "acks");
    mp_put_int(&w, -1);
    mp_put_str(&w, "timeout_ms");
    mp_put_int(&w, 30000);
    mp_put_str(&w, "parts");
    mp_put_array(&w, 1);
    mp_put_map(&w, 3);
    mp_put_str(&w, "topic");
    mp_put_str(&w, "events");
    mp_put_str(&w, "partition");
    mp_put_int(&w, 0);
    mp_put_str(&w, "records");
    mp_put_bin(&w, records.data, records.len);
    wire_frame_end(out, start);
    buf_free(&records);
}

static void gen_frames(void)
{
    struct buf f = {0};
    struct mp_writer w;
    size_t start;

    produce_request(&f, KAPPA_COMPRESSION_NONE);
    write_file("fuzz_frame", "produce-none", f.data, f.len);
    f.len = 0;
    produce_request(&f, KAPPA_COMPRESSION_ZSTD);
    write_file("fuzz_frame", "produce-zstd", f.data, f.len);
    f.len = 0;

    start = wire_frame_begin(&f);
    mp_writer_init(&w, &f);
    wire_request_begin(&w, WIRE_API_METADATA, 0, 1);
    mp_put_map(&w, 1);
    mp_put_str(&w, "topics");
    mp_put_array(&w, 2);
    mp_put_str(&w, "a");
    mp_put_str(&w, "b.c-d_e");
    wire_frame_end(&f, start);
    write_file("fuzz_frame", "metadata", f.data, f.len);
    f.len = 0;

    start = wire_frame_begin(&f);
    mp_writer_init(&w, &f);
    wire_response_begin(&w, 9, 0, NULL);
    mp_put_map(&w, 1);
    mp_put_str(&w, "parts");
    mp_put_array(&w, 1);
    mp_put_map(&w, 3);
    mp_put_str(&w, "error");
    mp_put_int(&w, 0);
    mp_put_str(&w, "high_watermark");
    mp_put_int(&w, 5);
    mp_put_str(&w, "records");
    {
        struct buf records = {0};
        add_batch(&records, KAPPA_COMPRESSION_LZ4, 20, 0, 0);
        mp_put_bin(&w, records.data, records.len);
        buf_free(&records);
    }
    wire_frame_end(&f, start);
    write_file("fuzz_frame", "fetch-response", f.data, f.len);
    f.len = 0;

    start = wire_frame_begin(&f);
    mp_writer_init(&w, &f);
    wire_response_begin(&w, 3, 1002, "unknown topic: nope");
    mp_put_nil(&w);
    wire_frame_end(&f, start);
    write_file("fuzz_frame", "error-response", f.data, f.len);
    buf_free(&f);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_corpus DIR\n");
        return 2;
    }
    out_dir = argv[1];
    gen_batches();
    gen_frames();
    return 0;
}
