/* The node-to-node transport that every Raft group on a node shares: one
 * outbound TCP connection per peer node (all groups multiplexed, each frame
 * tagged with its group id), inbound connections accepted on the node's
 * cluster address, and raft 0.15 messages encoded with consensus/rmsg.
 *
 * Loop thread only: every function and callback runs on the loop given to
 * transport_init. */
#ifndef KAPPA_CONSENSUS_TRANSPORT_H
#define KAPPA_CONSENSUS_TRANSPORT_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "consensus/rmsg.h"

/* Protocol version carried in the handshake; peers must match exactly. */
#define TRANSPORT_VERSION 1

/* "host:port" plus the NUL; host is an IPv4 literal. */
#define TRANSPORT_ADDRESS_SIZE 32

/* Defaults for struct transport_limits. */
#define TRANSPORT_FRAME_BYTES_MAX_DEFAULT (64u * 1024 * 1024)
#define TRANSPORT_QUEUE_BYTES_MAX_DEFAULT ((size_t)128 * 1024 * 1024)
#define TRANSPORT_PEERS_MAX_DEFAULT       64
#define TRANSPORT_CONNS_IN_MAX_DEFAULT    128
#define TRANSPORT_CONNECT_TIMEOUT_MS      5000
#define TRANSPORT_BACKOFF_MIN_MS_DEFAULT  100
#define TRANSPORT_BACKOFF_MAX_MS_DEFAULT  5000
#define TRANSPORT_LOG_LINES_PER_S_DEFAULT 10

struct transport_limits {
    uint32_t frame_bytes_max;    /* one frame body, both directions */
    size_t queue_bytes_max;      /* per peer: queued + being written */
    unsigned peers_max;          /* transport_set_peer entries */
    unsigned conns_in_max;       /* inbound connections, incl. handshaking */
    unsigned connect_timeout_ms; /* TCP connect + handshake, both sides */
    unsigned backoff_min_ms;     /* first retry delay after a failure */
    unsigned backoff_max_ms;     /* doubling stops here */
    unsigned log_lines_per_s;    /* warnings about peers, rate limited */
    struct rmsg_limits rmsg;     /* entries per message, config servers */
};

void transport_limits_default(struct transport_limits *l);

struct transport;
struct transport_send;

/* A message arrived for group_id from the node m->server_id (the sender
 * named in the connection's handshake, checked on every frame; there is
 * no authentication: bind the cluster address to the cluster network;
 * m->server_address is the sender's address).
 *
 * Ownership follows raft 0.15's recv contract exactly, so the message can be
 * handed straight to raft's raft_io_recv_cb:
 *   - *m itself and m->server_address are borrowed: valid only until this
 *     callback returns.
 *   - AppendEntries entries (one raft_malloc'd array, all payloads in one
 *     raft_malloc'd batch with entry.batch set) and InstallSnapshot
 *     conf/data (raft heap) are OWNED by the callee: give them to raft or
 *     free them with rmsg_release (e.g. unknown group).
 * The callback may call transport_send, transport_set_peer,
 * transport_remove_peer and transport_close. */
typedef void (*transport_recv_cb)(struct transport *t, uint64_t group_id,
                                  struct raft_message *m, void *data);

/* A send finished. status is 0 (the frame was handed to the kernel; like
 * raft_uv this says nothing about delivery) or:
 *   KAPPA_ETRANSPORT  no connection to the peer (connect failed, in backoff,
 *                     connection lost, unknown peer id)
 *   KAPPA_EBUSY       the peer's send queue is over queue_bytes_max
 *   KAPPA_ETOOBIG     the encoded message exceeds frame_bytes_max
 *   KAPPA_ENOMEM      out of memory while encoding
 *   KAPPA_ECANCELED   transport closing, or the peer was removed (frames
 *                     already being written then get KAPPA_ETRANSPORT)
 * All of these mean "the message was not sent; raft will retry". A slice-2
 * raft_io should map them to RAFT_NOCONNECTION (RAFT_NOMEM for ENOMEM,
 * RAFT_CANCELED for ECANCELED). */
typedef void (*transport_send_cb)(struct transport_send *req, int status);

/* A send request, allocated by the caller (embed it in your own request).
 * Borrowed by the transport from transport_send until its callback runs;
 * the caller may free it inside the callback. */
struct transport_send {
    void *data; /* for the caller; the transport never touches it */
    /* Private. */
    struct transport_send *next;
    transport_send_cb cb;
    struct buf frame; /* encoded frame: u32 length + body */
    int status;
};

/* An application message (rmsg.h, RMSG_TYPE_APP) arrived from node
 * from_id. payload is borrowed: valid only during the callback. The
 * callback may call transport_send_app and the other functions allowed in
 * transport_recv_cb. */
typedef void (*transport_app_cb)(struct transport *t, uint64_t from_id,
                                 const uint8_t *payload, size_t len,
                                 void *data);

typedef void (*transport_close_cb)(struct transport *t);

struct transport_stats {
    uint64_t frames_sent;     /* written to the kernel */
    uint64_t frames_received; /* decoded and passed to recv_cb */
    uint64_t sends_failed;    /* completed with a non-zero status */
    uint64_t conns_accepted;  /* inbound handshakes completed */
    uint64_t conns_connected; /* outbound handshakes completed */
    uint64_t conns_rejected;  /* handshake mismatch or over a limit */
    uint64_t proto_errors;    /* malformed frames from peers */
};

/* Caller-allocated; all fields are private. Valid from transport_init until
 * the close callback; the caller frees the struct after that. */
struct transport {
    void *data; /* the data argument of transport_init */
    /* Private. */
    uv_loop_t *loop;
    uint64_t node_id;
    uint64_t cluster_id;
    char address[TRANSPORT_ADDRESS_SIZE]; /* bound "host:port" once started */
    struct sockaddr_in listen_sa;
    struct transport_limits limits;
    transport_recv_cb recv_cb;
    transport_app_cb app_cb; /* NULL: application messages are dropped */
    transport_close_cb close_cb;
    uv_tcp_t listener;
    uv_prepare_t prepare; /* flushes queues, completes failed sends */
    uv_timer_t tick;      /* backoff expiry and connect timeouts */
    int is_started;
    int is_closing;
    unsigned n_handles;  /* listener, prepare, tick: open until closed */
    unsigned n_conns;    /* all connections not yet freed */
    unsigned n_conns_in; /* inbound ones among them */
    unsigned n_peers;
    struct transport_peer *peers;
    struct transport_conn *conns;
    struct transport_send *done_head; /* failed sends awaiting their cb */
    struct transport_send *done_tail;
    uint64_t log_window_ms;
    unsigned log_lines;
    unsigned log_suppressed;
    struct transport_stats stats;
};

/* Initialises t on loop for node node_id (> 0) of cluster cluster_id,
 * to listen on listen_addr ("a.b.c.d:port", port 0 picks one; the host
 * must be a concrete IPv4 address, not 0.0.0.0, because it is both the
 * address peers dial and the source address of outbound connections).
 * recv_cb gets every received message with `data`. Uses default limits.
 * Returns 0, KAPPA_EINVAL or KAPPA_ECONFIG (bad address). On success the
 * caller must eventually call transport_close, even if start fails. */
int transport_init(struct transport *t, uv_loop_t *loop, uint64_t node_id,
                   uint64_t cluster_id, const char *listen_addr,
                   transport_recv_cb recv_cb, void *data);

/* Replaces the limits; only before transport_start. Returns KAPPA_EINVAL for
 * inconsistent limits (queue smaller than a frame, zero counts). */
int transport_set_limits(struct transport *t, const struct transport_limits *l);

/* Binds and listens. Returns 0, KAPPA_EINVAL (already started or closing)
 * or KAPPA_ETRANSPORT (bind/listen failed, e.g. address in use). */
int transport_start(struct transport *t);

/* The bound address "host:port" (the real port when 0 was asked for), which
 * is also the address sent to peers. Valid until close; "" before start. */
const char *transport_address(const struct transport *t);

/* Adds or updates the peer node_id at addr ("a.b.c.d:port"). Connecting is
 * lazy (on the first send). Changing the address of a connected peer closes
 * its connection. With an unchanged address it is a cheap no-op, so a
 * raft_io may call it with message->server_id / server_address (raft's
 * destination, which for Kappa is the node id and cluster address) right
 * before each transport_send. Returns 0, KAPPA_EINVAL (node_id 0 or our own id,
 * bad address, closing) or KAPPA_EBUSY (peers_max reached). */
int transport_set_peer(struct transport *t, uint64_t node_id, const char *addr);

/* Forgets a peer: its queued sends complete with KAPPA_ECANCELED and its
 * connection closes. Unknown ids are ignored. */
void transport_remove_peer(struct transport *t, uint64_t node_id);

/* Sends m to peer_id for group_id. m is encoded at once into the peer's
 * queue, with our own node id and address as the sender (m->server_id and
 * m->server_address, which raft sets to the destination, are ignored), so
 * m and every buffer it points to are free to reuse when this returns.
 * Frames to one peer are written in the order sent, so messages of one
 * group to one peer arrive in order (or not at all, after a reconnect).
 * Queued frames are written by a uv_prepare handle, i.e. before the loop
 * next blocks; a send made from another prepare callback may wait for the
 * next loop iteration.
 *
 * Returns 0, and then cb runs exactly once, never from inside this call,
 * with 0 or one of the statuses listed at transport_send_cb. Returns
 * KAPPA_ESHUTDOWN (closing) or KAPPA_EINVAL (NULL arguments); then cb never
 * runs. */
int transport_send(struct transport *t, struct transport_send *req,
                   uint64_t peer_id, uint64_t group_id,
                   const struct raft_message *m, transport_send_cb cb);

/* Sets the callback for application messages (NULL drops them). */
void transport_set_app_cb(struct transport *t, transport_app_cb cb);

/* Sends an application message (payload of len <= RMSG_APP_BYTES_MAX bytes,
 * copied at once) to peer_id, in order with the Raft frames to that peer.
 * Same contract and statuses as transport_send: returns 0 and then cb runs
 * exactly once, never from inside this call; or returns KAPPA_ESHUTDOWN or
 * KAPPA_EINVAL and cb never runs. */
int transport_send_app(struct transport *t, struct transport_send *req,
                       uint64_t peer_id, const void *payload, size_t len,
                       transport_send_cb cb);

/* Stops listening, completes every pending send with KAPPA_ECANCELED, closes
 * every connection and handle, and calls cb (may be NULL) once everything is
 * closed and freed; t may then be freed. Calling it again is a no-op. */
void transport_close(struct transport *t, transport_close_cb cb);

/* Counters for tests and metrics. */
const struct transport_stats *transport_stats(const struct transport *t);

/* 1 if there is an established (handshaken) outbound connection to peer_id,
 * for tests and status pages. */
int transport_is_connected(const struct transport *t, uint64_t peer_id);

#endif /* KAPPA_CONSENSUS_TRANSPORT_H */
