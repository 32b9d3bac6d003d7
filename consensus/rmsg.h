/* Codec for the six raft 0.15 RPC messages carried between nodes: one
 * msgpack frame body per message, tagged with the Raft group it belongs to.
 * The byte layout is written out at the top of rmsg.c. */
#ifndef KAPPA_CONSENSUS_RMSG_H
#define KAPPA_CONSENSUS_RMSG_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* Longest server address carried in a message or a configuration, not
 * counting the NUL ("255.255.255.255:65535" is 21 bytes). */
#define RMSG_ADDRESS_BYTES_MAX 255

/* Defaults for struct rmsg_limits. */
#define RMSG_ENTRIES_MAX_DEFAULT      65536
#define RMSG_CONF_SERVERS_MAX_DEFAULT 256

/* Bounds checked while decoding, before anything is allocated. The frame
 * size itself is bounded by whoever hands rmsg_decode the body. */
struct rmsg_limits {
    uint32_t entries_max;      /* entries in one AppendEntries */
    uint32_t conf_servers_max; /* servers in an InstallSnapshot config */
};

void rmsg_limits_default(struct rmsg_limits *l);

/* An upper bound on the encoded body size of m, computed without encoding
 * (sum of payloads plus per-field overheads). Used to reserve the output
 * buffer once and to refuse oversized messages before copying them. */
size_t rmsg_encoded_bytes_max(const struct raft_message *m);

/* Appends the body for m to out: group_id, m->server_id,
 * m->server_address, m->type and the type's fields. The caller decides
 * what server_id/server_address mean (the transport writes the *sender's*
 * identity there, which is what raft expects on receive). Borrows m; every
 * byte is copied, so m and its buffers may be freed on return.
 *
 * Returns 0, KAPPA_EINVAL (unknown type, entry type, NULL or too long
 * address, more than UINT32_MAX bytes in one bin) or KAPPA_ENOMEM. On error
 * out->len is restored to its value on entry. */
int rmsg_encode(struct buf *out, uint64_t group_id,
                const struct raft_message *m);

/* Decodes one body of n bytes into *m exactly as raft's recv path wants to
 * own it (raft 0.15 src/recv.c):
 *   - AppendEntries: entries is NULL when n_entries == 0; otherwise one
 *     raft_malloc'd array, and every entry's buf points into ONE
 *     raft_malloc'd batch (entry.batch set on every entry, even zero-length
 *     ones). Payloads start 8-byte aligned inside the batch.
 *   - InstallSnapshot: conf is a decoded configuration (raft heap) and
 *     data.base a raft_malloc'd block (never NULL, even for len 0).
 *   - server_address points at `address`, a caller buffer of
 *     RMSG_ADDRESS_BYTES_MAX + 1 bytes, NUL-terminated; raft only borrows
 *     the address during its recv callback (it copies what it keeps).
 * Whoever receives *m owns the raft_malloc'd parts: hand them to raft, or
 * call rmsg_release. On error nothing is left allocated and *m is zeroed.
 *
 * Returns 0, KAPPA_EPROTO (malformed, trailing bytes, unknown type, zero
 * server id, bad entry type or role, duplicate server), KAPPA_ETOOBIG
 * (over a limit) or KAPPA_ENOMEM. Never asserts on the input. */
int rmsg_decode(const uint8_t *body, size_t n, const struct rmsg_limits *lim,
                uint64_t *group_id, struct raft_message *m, char *address);

/* Frees the raft_malloc'd memory a decoded message owns (entries and their
 * batches, snapshot configuration and data) and zeroes those fields, for a
 * message nobody consumed (for example one for an unknown group). Safe on
 * any message type; not for messages built by raft itself. */
void rmsg_release(struct raft_message *m);

/* Node-level application messages (not Raft) share the frames and the
 * connections: group id RMSG_GROUP_APP (0, never a Raft group) and type
 * RMSG_TYPE_APP, carrying one opaque payload for the application on top
 * (the broker's "propose this metadata command" and its answer):
 *
 *   array(5) [ group_id 0, server_id uint64 > 0, server_address str,
 *              type 64, payload bin (<= RMSG_APP_BYTES_MAX) ]
 */
#define RMSG_GROUP_APP     0
#define RMSG_TYPE_APP      64
#define RMSG_APP_BYTES_MAX (1u << 20)

/* Appends an application message body to out. Returns 0, KAPPA_EINVAL
 * (server_id 0, bad address, payload over RMSG_APP_BYTES_MAX) or
 * KAPPA_ENOMEM; on error out->len is restored. */
int rmsg_encode_app(struct buf *out, uint64_t server_id, const char *address,
                    const void *payload, size_t len);

/* Classifies a body: returns 1 when it is an application message (then
 * *server_id, *payload and *len are set; the payload is borrowed from
 * body), 0 when it is not one (decode it with rmsg_decode), or
 * KAPPA_EPROTO when it claims to be one but is malformed. Never asserts. */
int rmsg_decode_app(const uint8_t *body, size_t n, uint64_t *server_id,
                    const uint8_t **payload, size_t *len);

/* The message type's name for logs ("append_entries", ...), "unknown" for
 * anything else. */
const char *rmsg_type_name(unsigned type);

#endif /* KAPPA_CONSENSUS_RMSG_H */
