/*
 * Raft message body (one msgpack array; the transport frames it with a u32
 * big-endian length, as common/wire does for client frames):
 *
 *   array(4 + F) [
 *     group_id        uint64   Raft group (partition or metadata group)
 *     server_id       uint64   > 0; the transport writes the sender's id
 *     server_address  str      <= RMSG_ADDRESS_BYTES_MAX bytes, no NUL
 *     type            uint     RAFT_IO_* (1..6)
 *     F fields, by type:
 *   ]
 *
 *   1 AppendEntries (F=5):       term, prev_log_index, prev_log_term,
 *                                leader_commit, entries
 *       entries = array(n <= entries_max) of array(3) [term uint64,
 *                 type uint (RAFT_COMMAND..RAFT_CHANGE), payload bin]
 *   2 AppendEntriesResult (F=3): term, rejected, last_log_index
 *   3 RequestVote (F=6):         term, candidate_id, last_log_index,
 *                                last_log_term, disrupt_leader bool,
 *                                pre_vote bool
 *   4 RequestVoteResult (F=3):   term, vote_granted bool,
 *                                pre_vote uint (raft_tribool: 0 unknown,
 *                                1 true, 2 false)
 *   5 InstallSnapshot (F=6):     term, last_index, last_term, conf_index,
 *                                conf, data bin
 *       conf = array(n <= conf_servers_max) of array(3) [id uint64 > 0,
 *              address str, role uint (RAFT_STANDBY..RAFT_SPARE)]
 *   6 TimeoutNow (F=3):          term, last_log_index, last_log_term
 *
 * Terms and indexes are msgpack uints (any width). A body must contain
 * exactly one value: trailing bytes are an error. New fields mean a new
 * TRANSPORT_VERSION, negotiated by the handshake.
 *
 * Decoding copies every entry payload once, from the frame into one
 * raft_malloc'd batch; nothing else is copied.
 */
#include "rmsg.h"

#include <string.h>

#include "common/assert.h"
#include "common/err.h"
#include "common/mp.h"

/* Fields after the 4-value header, indexed by message type. */
static const unsigned fields_by_type[] = {0, 5, 3, 6, 3, 6, 3};

#define ENTRY_ALIGN 8

/* Worst-case msgpack sizes: a uint64, a str/bin/array header. */
#define UINT_BYTES_MAX ((size_t)9)
#define HDR_BYTES_MAX  ((size_t)5)

void rmsg_limits_default(struct rmsg_limits *l)
{
    l->entries_max = RMSG_ENTRIES_MAX_DEFAULT;
    l->conf_servers_max = RMSG_CONF_SERVERS_MAX_DEFAULT;
}

const char *rmsg_type_name(unsigned type)
{
    static const char *const names[] = {
        "unknown",      "append_entries",      "append_entries_result",
        "request_vote", "request_vote_result", "install_snapshot",
        "timeout_now",
    };
    return type < sizeof names / sizeof names[0] ? names[type] : "unknown";
}

static size_t str_bytes_max(const char *s)
{
    return HDR_BYTES_MAX + (s != NULL ? strlen(s) : 0);
}

size_t rmsg_encoded_bytes_max(const struct raft_message *m)
{
    size_t n = HDR_BYTES_MAX + 3 * UINT_BYTES_MAX +
               str_bytes_max(m->server_address) + 6 * UINT_BYTES_MAX;
    const struct raft_append_entries *ae = &m->append_entries;
    const struct raft_install_snapshot *is = &m->install_snapshot;

    if (m->type == RAFT_IO_APPEND_ENTRIES) {
        n += HDR_BYTES_MAX;
        for (unsigned i = 0; i < ae->n_entries; i++) {
            n +=
                1 + 2 * UINT_BYTES_MAX + HDR_BYTES_MAX + ae->entries[i].buf.len;
        }
    } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
        n += HDR_BYTES_MAX + HDR_BYTES_MAX + is->data.len;
        for (unsigned i = 0; i < is->conf.n; i++) {
            n += 1 + 2 * UINT_BYTES_MAX +
                 str_bytes_max(is->conf.servers[i].address);
        }
    }
    return n;
}

static int address_ok(const char *s)
{
    return s != NULL && strlen(s) <= RMSG_ADDRESS_BYTES_MAX;
}

static int encode_entries(struct mp_writer *w,
                          const struct raft_append_entries *ae)
{
    mp_put_array(w, ae->n_entries);
    for (unsigned i = 0; i < ae->n_entries; i++) {
        const struct raft_entry *e = &ae->entries[i];
        if (e->type < RAFT_COMMAND || e->type > RAFT_CHANGE ||
            e->buf.len > UINT32_MAX) {
            return KAPPA_EINVAL;
        }
        mp_put_array(w, 3);
        mp_put_uint(w, e->term);
        mp_put_uint(w, e->type);
        mp_put_bin(w, e->buf.base, e->buf.len);
    }
    return 0;
}

static int encode_snapshot(struct mp_writer *w,
                           const struct raft_install_snapshot *is)
{
    mp_put_uint(w, is->term);
    mp_put_uint(w, is->last_index);
    mp_put_uint(w, is->last_term);
    mp_put_uint(w, is->conf_index);
    mp_put_array(w, is->conf.n);
    for (unsigned i = 0; i < is->conf.n; i++) {
        const struct raft_server *s = &is->conf.servers[i];
        if (!address_ok(s->address) || s->role < 0) {
            return KAPPA_EINVAL;
        }
        mp_put_array(w, 3);
        mp_put_uint(w, s->id);
        mp_put_str(w, s->address);
        mp_put_uint(w, (uint64_t)s->role);
    }
    if (is->data.len > UINT32_MAX) {
        return KAPPA_EINVAL;
    }
    mp_put_bin(w, is->data.base, is->data.len);
    return 0;
}

/* Writes the type's fields; returns KAPPA_EINVAL for what cannot be
 * encoded. */
static int encode_fields(struct mp_writer *w, const struct raft_message *m)
{
    switch (m->type) {
    case RAFT_IO_APPEND_ENTRIES:
        mp_put_uint(w, m->append_entries.term);
        mp_put_uint(w, m->append_entries.prev_log_index);
        mp_put_uint(w, m->append_entries.prev_log_term);
        mp_put_uint(w, m->append_entries.leader_commit);
        return encode_entries(w, &m->append_entries);
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        mp_put_uint(w, m->append_entries_result.term);
        mp_put_uint(w, m->append_entries_result.rejected);
        mp_put_uint(w, m->append_entries_result.last_log_index);
        return 0;
    case RAFT_IO_REQUEST_VOTE:
        mp_put_uint(w, m->request_vote.term);
        mp_put_uint(w, m->request_vote.candidate_id);
        mp_put_uint(w, m->request_vote.last_log_index);
        mp_put_uint(w, m->request_vote.last_log_term);
        mp_put_bool(w, m->request_vote.disrupt_leader);
        mp_put_bool(w, m->request_vote.pre_vote);
        return 0;
    case RAFT_IO_REQUEST_VOTE_RESULT:
        mp_put_uint(w, m->request_vote_result.term);
        mp_put_bool(w, m->request_vote_result.vote_granted);
        mp_put_uint(w, (uint64_t)m->request_vote_result.pre_vote);
        return 0;
    case RAFT_IO_INSTALL_SNAPSHOT:
        return encode_snapshot(w, &m->install_snapshot);
    case RAFT_IO_TIMEOUT_NOW:
        mp_put_uint(w, m->timeout_now.term);
        mp_put_uint(w, m->timeout_now.last_log_index);
        mp_put_uint(w, m->timeout_now.last_log_term);
        return 0;
    default:
        return KAPPA_EINVAL;
    }
}

int rmsg_encode(struct buf *out, uint64_t group_id,
                const struct raft_message *m)
{
    struct mp_writer w;
    size_t start = out->len;
    int rv;

    if (m->type < RAFT_IO_APPEND_ENTRIES || m->type > RAFT_IO_TIMEOUT_NOW ||
        !address_ok(m->server_address)) {
        return KAPPA_EINVAL;
    }
    /* One reservation, so the payloads are copied once and never moved by
     * a growing buffer. */
    if (buf_reserve(out, rmsg_encoded_bytes_max(m)) != 0) {
        return KAPPA_ENOMEM;
    }
    mp_writer_init(&w, out);
    mp_put_array(&w, 4 + fields_by_type[m->type]);
    mp_put_uint(&w, group_id);
    mp_put_uint(&w, m->server_id);
    mp_put_str(&w, m->server_address);
    mp_put_uint(&w, m->type);
    rv = encode_fields(&w, m);
    if (rv == 0) {
        rv = w.err;
    }
    if (rv != 0) {
        out->len = start;
    }
    return rv;
}

/* Decoding. */

/* raft's ids, terms and indexes are unsigned long long. */
static int read_ull(struct mp_reader *r, unsigned long long *v)
{
    uint64_t u;
    if (mp_read_uint(r, &u) != 0) {
        return KAPPA_EPROTO;
    }
    *v = u;
    return 0;
}

static int read_uint_max(struct mp_reader *r, uint64_t max, uint64_t *v)
{
    if (mp_read_uint(r, v) != 0 || *v > max) {
        r->err = KAPPA_EPROTO;
        return KAPPA_EPROTO;
    }
    return 0;
}

static int read_bool(struct mp_reader *r, bool *v)
{
    int b;
    if (mp_read_bool(r, &b) != 0) {
        return KAPPA_EPROTO;
    }
    *v = b != 0;
    return 0;
}

static size_t align_up(size_t n)
{
    return (n + ENTRY_ALIGN - 1) & ~(size_t)(ENTRY_ALIGN - 1);
}

/* Reads one entry array(3) [term, type, payload] without copying. */
static int read_entry(struct mp_reader *r, struct raft_entry *e,
                      const uint8_t **payload)
{
    uint32_t n_fields;
    uint32_t len;
    uint64_t type;

    if (mp_read_array(r, &n_fields) != 0 || n_fields != 3 ||
        read_ull(r, &e->term) != 0 ||
        read_uint_max(r, RAFT_CHANGE, &type) != 0 || type < RAFT_COMMAND ||
        mp_read_bin(r, payload, &len) != 0) {
        return KAPPA_EPROTO;
    }
    e->type = (unsigned short)type;
    e->buf.len = len;
    return 0;
}

/* First pass over the entries: validates them and sums the batch size. */
static int size_entries(struct mp_reader r, uint32_t n, size_t *batch_bytes)
{
    struct raft_entry e;
    const uint8_t *payload;
    size_t total = 0;

    for (uint32_t i = 0; i < n; i++) {
        if (read_entry(&r, &e, &payload) != 0) {
            return KAPPA_EPROTO;
        }
        total += align_up(e.buf.len);
    }
    *batch_bytes = total;
    return 0;
}

static int decode_entries(struct mp_reader *r, const struct rmsg_limits *lim,
                          struct raft_append_entries *ae)
{
    const uint8_t *payload;
    size_t batch_bytes;
    size_t offset = 0;
    uint8_t *batch;
    uint32_t n;

    if (mp_read_array(r, &n) != 0) {
        return KAPPA_EPROTO;
    }
    if (n > lim->entries_max) {
        return KAPPA_ETOOBIG;
    }
    if (n == 0) {
        return 0; /* entries stays NULL, as raft's recv path expects */
    }
    if (size_entries(*r, n, &batch_bytes) != 0) {
        return KAPPA_EPROTO;
    }
    /* A non-NULL batch even when every payload is empty: raft frees entries
     * by their batch pointer. */
    batch = raft_malloc(batch_bytes > 0 ? batch_bytes : ENTRY_ALIGN);
    if (batch == NULL) {
        return KAPPA_ENOMEM;
    }
    ae->entries = raft_malloc(n * sizeof *ae->entries);
    if (ae->entries == NULL) {
        raft_free(batch);
        return KAPPA_ENOMEM;
    }
    ae->n_entries = n;
    for (uint32_t i = 0; i < n; i++) {
        struct raft_entry *e = &ae->entries[i];
        /* Already validated by size_entries. */
        if (NEVER(read_entry(r, e, &payload) != 0)) {
            raft_free(ae->entries);
            raft_free(batch);
            ae->entries = NULL;
            ae->n_entries = 0;
            return KAPPA_EPROTO;
        }
        e->batch = batch;
        e->buf.base = batch + offset;
        if (e->buf.len > 0) {
            memcpy(e->buf.base, payload, e->buf.len);
        }
        offset += align_up(e->buf.len);
    }
    return 0;
}

static int decode_server(struct mp_reader *r, struct raft_configuration *conf)
{
    char address[RMSG_ADDRESS_BYTES_MAX + 1];
    uint32_t n_fields;
    raft_id id;
    uint64_t role;
    int rv;

    if (mp_read_array(r, &n_fields) != 0 || n_fields != 3 ||
        read_ull(r, &id) != 0 || id == 0 ||
        mp_read_cstr(r, address, sizeof address) != 0 ||
        read_uint_max(r, RAFT_SPARE, &role) != 0) {
        return KAPPA_EPROTO;
    }
    rv = raft_configuration_add(conf, id, address, (int)role);
    if (rv == RAFT_NOMEM) {
        return KAPPA_ENOMEM;
    }
    return rv == 0 ? 0 : KAPPA_EPROTO; /* duplicate id or address */
}

static int decode_snapshot(struct mp_reader *r, const struct rmsg_limits *lim,
                           struct raft_install_snapshot *is)
{
    const uint8_t *data;
    uint32_t n_servers;
    uint32_t len;
    int rv;

    raft_configuration_init(&is->conf);
    if (read_ull(r, &is->term) != 0 || read_ull(r, &is->last_index) != 0 ||
        read_ull(r, &is->last_term) != 0 || read_ull(r, &is->conf_index) != 0 ||
        mp_read_array(r, &n_servers) != 0) {
        return KAPPA_EPROTO;
    }
    if (n_servers > lim->conf_servers_max) {
        return KAPPA_ETOOBIG;
    }
    for (uint32_t i = 0; i < n_servers; i++) {
        rv = decode_server(r, &is->conf);
        if (rv != 0) {
            return rv;
        }
    }
    if (mp_read_bin(r, &data, &len) != 0) {
        return KAPPA_EPROTO;
    }
    is->data.base = raft_malloc(len > 0 ? len : 1);
    if (is->data.base == NULL) {
        return KAPPA_ENOMEM;
    }
    is->data.len = len;
    if (len > 0) {
        memcpy(is->data.base, data, len);
    }
    return 0;
}

/* Reads the type's fields into m. Returns 0 or an error, possibly with
 * memory attached to m that the caller releases. */
static int decode_fields(struct mp_reader *r, const struct rmsg_limits *lim,
                         struct raft_message *m)
{
    struct raft_append_entries *ae = &m->append_entries;
    struct raft_request_vote *rv = &m->request_vote;
    uint64_t pre_vote;

    switch (m->type) {
    case RAFT_IO_APPEND_ENTRIES:
        if (read_ull(r, &ae->term) != 0 ||
            read_ull(r, &ae->prev_log_index) != 0 ||
            read_ull(r, &ae->prev_log_term) != 0 ||
            read_ull(r, &ae->leader_commit) != 0) {
            return KAPPA_EPROTO;
        }
        return decode_entries(r, lim, ae);
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        return read_ull(r, &m->append_entries_result.term) ||
                       read_ull(r, &m->append_entries_result.rejected) ||
                       read_ull(r, &m->append_entries_result.last_log_index)
                   ? KAPPA_EPROTO
                   : 0;
    case RAFT_IO_REQUEST_VOTE:
        return read_ull(r, &rv->term) || read_ull(r, &rv->candidate_id) ||
                       read_ull(r, &rv->last_log_index) ||
                       read_ull(r, &rv->last_log_term) ||
                       read_bool(r, &rv->disrupt_leader) ||
                       read_bool(r, &rv->pre_vote)
                   ? KAPPA_EPROTO
                   : 0;
    case RAFT_IO_REQUEST_VOTE_RESULT:
        if (read_ull(r, &m->request_vote_result.term) != 0 ||
            read_bool(r, &m->request_vote_result.vote_granted) != 0 ||
            read_uint_max(r, raft_tribool_false, &pre_vote) != 0) {
            return KAPPA_EPROTO;
        }
        m->request_vote_result.pre_vote = (raft_tribool)pre_vote;
        return 0;
    case RAFT_IO_INSTALL_SNAPSHOT:
        return decode_snapshot(r, lim, &m->install_snapshot);
    default: /* RAFT_IO_TIMEOUT_NOW; the type was checked by the caller */
        return read_ull(r, &m->timeout_now.term) ||
                       read_ull(r, &m->timeout_now.last_log_index) ||
                       read_ull(r, &m->timeout_now.last_log_term)
                   ? KAPPA_EPROTO
                   : 0;
    }
}

/* Reads the 4-value header; leaves m->type checked and the reader at the
 * first field. */
static int decode_header(struct mp_reader *r, uint64_t *group_id,
                         struct raft_message *m, char *address)
{
    uint32_t n_values;
    uint64_t type;

    if (mp_read_array(r, &n_values) != 0 || mp_read_uint(r, group_id) != 0 ||
        read_ull(r, &m->server_id) != 0 || m->server_id == 0 ||
        mp_read_cstr(r, address, RMSG_ADDRESS_BYTES_MAX + 1) != 0 ||
        read_uint_max(r, RAFT_IO_TIMEOUT_NOW, &type) != 0 ||
        type < RAFT_IO_APPEND_ENTRIES || n_values != 4 + fields_by_type[type]) {
        return KAPPA_EPROTO;
    }
    m->type = (unsigned short)type;
    m->server_address = address;
    return 0;
}

int rmsg_decode(const uint8_t *body, size_t n, const struct rmsg_limits *lim,
                uint64_t *group_id, struct raft_message *m, char *address)
{
    struct mp_reader r;
    int rv;

    memset(m, 0, sizeof *m);
    address[0] = '\0';
    mp_reader_init(&r, body, n);
    rv = decode_header(&r, group_id, m, address);
    if (rv == 0) {
        rv = decode_fields(&r, lim, m);
    }
    if (rv == 0 && r.p != r.end) {
        rv = KAPPA_EPROTO;
    }
    if (rv != 0) {
        rmsg_release(m);
        memset(m, 0, sizeof *m);
    }
    return rv;
}

void rmsg_release(struct raft_message *m)
{
    struct raft_append_entries *ae = &m->append_entries;
    struct raft_install_snapshot *is = &m->install_snapshot;
    void *batch = NULL;

    switch (m->type) {
    case RAFT_IO_APPEND_ENTRIES:
        for (unsigned i = 0; ae->entries != NULL && i < ae->n_entries; i++) {
            if (ae->entries[i].batch != batch) {
                batch = ae->entries[i].batch;
                raft_free(batch);
            }
        }
        raft_free(ae->entries);
        ae->entries = NULL;
        ae->n_entries = 0;
        break;
    case RAFT_IO_INSTALL_SNAPSHOT:
        raft_configuration_close(&is->conf);
        raft_configuration_init(&is->conf);
        raft_free(is->data.base);
        is->data.base = NULL;
        is->data.len = 0;
        break;
    default:
        break;
    }
}

int rmsg_encode_app(struct buf *out, uint64_t server_id, const char *address,
                    const void *payload, size_t len)
{
    struct mp_writer w;
    size_t start = out->len;

    if (server_id == 0 || !address_ok(address) || len > RMSG_APP_BYTES_MAX ||
        (payload == NULL && len > 0)) {
        return KAPPA_EINVAL;
    }
    mp_writer_init(&w, out);
    mp_put_array(&w, 5);
    mp_put_uint(&w, RMSG_GROUP_APP);
    mp_put_uint(&w, server_id);
    mp_put_str(&w, address);
    mp_put_uint(&w, RMSG_TYPE_APP);
    mp_put_bin(&w, payload, len);
    if (w.err != 0) {
        out->len = start;
        return KAPPA_ENOMEM;
    }
    return 0;
}

int rmsg_decode_app(const uint8_t *body, size_t n, uint64_t *server_id,
                    const uint8_t **payload, size_t *len)
{
    struct mp_reader r;
    uint32_t n_fields, addr_len, bin_len;
    uint64_t group_id, type;
    const char *addr;

    mp_reader_init(&r, body, n);
    if (mp_read_array(&r, &n_fields) != 0 || n_fields != 5 ||
        mp_peek(&r) != MP_UINT || mp_read_uint(&r, &group_id) != 0 ||
        group_id != RMSG_GROUP_APP) {
        return 0; /* not ours: rmsg_decode judges it */
    }
    if (mp_read_uint(&r, server_id) != 0 || *server_id == 0 ||
        mp_read_str(&r, &addr, &addr_len) != 0 ||
        addr_len > RMSG_ADDRESS_BYTES_MAX || mp_read_uint(&r, &type) != 0 ||
        type != RMSG_TYPE_APP || mp_peek(&r) != MP_BIN ||
        mp_read_bin(&r, payload, &bin_len) != 0 ||
        bin_len > RMSG_APP_BYTES_MAX || r.p != r.end) {
        return KAPPA_EPROTO;
    }
    *len = bin_len;
    return 1;
}
