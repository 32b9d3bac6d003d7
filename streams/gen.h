/* Producing a generated event stream into a topic: the loop shared by the
 * example generators (clickstream, monitoring, fraud). */
#ifndef KAPPA_STREAMS_GEN_H
#define KAPPA_STREAMS_GEN_H

#include <stddef.h>
#include <stdint.h>

#define GEN_KEY_MAX   32
#define GEN_VALUE_MAX 256

struct gen_event {
    char key[GEN_KEY_MAX];
    uint8_t value[GEN_VALUE_MAX];
    size_t value_len;
    int64_t timestamp_ms; /* the record's log timestamp */
};

/* Fills *ev with event i (a pure function of arg and i). */
typedef void (*gen_event_cb)(int64_t i, struct gen_event *ev, void *arg);

/* Creates topic with n_partitions if missing and produces events [0, n),
 * keyed (so one key stays in one partition). Returns 0 or an error with a
 * message in errmsg (KAPPA_ERRMSG_SIZE). */
int gen_produce(const char *bootstrap, const char *topic, int32_t n_partitions,
                int64_t n, gen_event_cb cb, void *arg, char *errmsg);

/* splitmix64: the generators' pseudo-random function. */
uint64_t gen_mix(uint64_t x);

#endif /* KAPPA_STREAMS_GEN_H */
