/* Producing generated events (see gen.h). */
#include "gen.h"

#include <string.h>

#include <kappa/client.h>

#include "common/err.h"

uint64_t gen_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

struct gen_state {
    int64_t n_failed;
    int first_err;
};

static void on_delivery(const struct kappa_delivery *d, void *arg)
{
    struct gen_state *g = arg;
    if (d->err != 0 && g->n_failed++ == 0) {
        g->first_err = d->err;
    }
}

static int produce_all(struct kappa_client *c, const char *topic, int64_t n,
                       gen_event_cb cb, void *arg)
{
    for (int64_t i = 0; i < n; i++) {
        struct gen_event ev;
        struct kappa_msg m;
        int rv;
        memset(&ev, 0, sizeof ev);
        cb(i, &ev, arg);
        memset(&m, 0, sizeof m);
        m.topic = topic;
        m.partition = KAPPA_PARTITION_ANY;
        m.key = ev.key;
        m.key_len = strlen(ev.key);
        m.value = ev.value;
        m.value_len = ev.value_len;
        m.timestamp_ms = ev.timestamp_ms;
        while ((rv = kappa_produce(c, &m)) == KAPPA_EBUSY) {
            kappa_poll(c, 10);
        }
        if (rv != 0) {
            return rv;
        }
    }
    return 0;
}

int gen_produce(const char *bootstrap, const char *topic, int32_t n_partitions,
                int64_t n, gen_event_cb cb, void *arg, char *errmsg)
{
    struct kappa_conf *conf = kappa_conf_new();
    struct kappa_client *c = NULL;
    struct gen_state g = {0, 0};
    char errstr[256];
    int rv;

    if (conf == NULL) {
        return KAPPA_ENOMEM;
    }
    if (kappa_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                       sizeof errstr) != 0 ||
        kappa_conf_set(conf, "linger.ms", "10", errstr, sizeof errstr) != 0) {
        kappa_conf_free(conf);
        kappa_errmsg_printf(errmsg, "%s", errstr);
        return KAPPA_ECONFIG;
    }
    rv = kappa_client_new(conf, &c, errstr, sizeof errstr);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "%s", errstr);
        return rv;
    }
    kappa_set_delivery_cb(c, on_delivery, &g);
    rv = kappa_create_topic(c, topic, n_partitions, 1, NULL, 10000);
    if (rv == KAPPA_ETOPIC_EXISTS) {
        rv = 0;
    }
    if (rv == 0) {
        rv = produce_all(c, topic, n, cb, arg);
    }
    if (rv == 0) {
        rv = kappa_flush(c, 120000);
    }
    if (rv == 0 && g.n_failed > 0) {
        rv = g.first_err;
    }
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "generate into %s: %s (%lld failed)", topic,
                            kappa_last_error(c), (long long)g.n_failed);
    }
    kappa_client_free(c);
    return rv;
}
