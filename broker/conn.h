/* A client connection: reads frames into one growing buffer, dispatches
 * them (many requests in flight, replies possibly out of order), queues
 * replies and writes them in batches once per loop iteration, with
 * back-pressure on both queues. Loop thread only. */
#ifndef KAPPA_BROKER_CONN_H
#define KAPPA_BROKER_CONN_H

#include <stdint.h>
#include <uv.h>

#include "broker/list.h"
#include "common/buf.h"
#include "common/mp.h"

struct server;

/* Frames handled per read callback or backlog pass (fairness). */
#define CONN_FRAMES_PER_PASS 64
/* Async requests (produce waiting for fsync, parked fetches) per conn. */
#define CONN_REQS_MAX 1024
/* Stop reading while this many reply bytes are queued... */
#define CONN_OUT_HIGH_BYTES (8u * 1024 * 1024)
/* Free reply buffers larger than this once written. */
#define CONN_OUT_KEEP_BYTES (4u * 1024 * 1024)
/* Smallest free space offered to a read. */
#define CONN_READ_BYTES_MIN (256u * 1024)

enum conn_state {
    CONN_OPEN = 0,
    CONN_CLOSE_AFTER_REPLY, /* protocol error: write what is queued, close */
    CONN_CLOSING,           /* uv_close called, waiting for close_cb */
};

struct conn;

/* An async request that outlives the frame it came in. When the connection
 * closes first, abandon_cb runs and req->conn becomes NULL; the owner then
 * frees the request when its work completes, without replying. */
struct req {
    struct list link; /* in conn->reqs */
    struct conn *conn;
    uint32_t correlation_id;
    void (*abandon_cb)(struct req *r);
};

struct conn {
    struct server *server;
    uint64_t id;
    enum conn_state state;
    uv_tcp_t tcp;
    uv_write_t write_req;
    struct list link;         /* in server->conns */
    struct list flush_link;   /* in server->flush_list */
    struct list backlog_link; /* in server->backlog_list */
    struct list reqs;
    uint32_t n_reqs;
    struct buf rbuf; /* received bytes; frames start at rpos */
    size_t rpos;
    struct buf out;  /* replies being built */
    struct buf wbuf; /* replies being written */
    int is_reading;
    int is_writing;
    char peer[64];
};

/* Accepts a pending connection on the server's listener. Returns 0 or a
 * KAPPA_E* code (the pending connection is then accepted and closed). */
int conn_accept(struct server *s);

/* Starts closing (idempotent). Pending requests are abandoned; memory is
 * freed in the close callback. */
void conn_close(struct conn *c);

/* Reading is allowed when the conn is open, the server is running and both
 * queues are under their caps; starts or stops the read accordingly. */
void conn_update_reading(struct conn *c);

/* Handles up to CONN_FRAMES_PER_PASS buffered frames (backlog pass). */
void conn_process(struct conn *c);

/* Writes everything queued in out if no write is in flight. */
void conn_flush(struct conn *c);

void conn_req_add(struct conn *c, struct req *r, uint32_t correlation_id,
                  void (*abandon_cb)(struct req *r));
/* Unlinks a finished request (no-op for an abandoned one). */
void conn_req_done(struct req *r);

/* Reply building: frames go straight into c->out. */
struct reply {
    struct conn *conn;
    uint32_t correlation_id;
    size_t start;
    struct mp_writer w;
};

/* Starts a success reply; the caller writes the result map with r->w. */
void reply_begin(struct reply *r, struct conn *c, uint32_t correlation_id);
/* Finishes the frame and schedules the flush. On out-of-memory the partial
 * frame is dropped and an ENOMEM error reply sent instead. */
void reply_end(struct reply *r);
/* Drops a reply being built (the handler decided to send an error). */
void reply_abort(struct reply *r);

/* Sends [correlation_id, code, message, nil]. */
void conn_reply_error(struct conn *c, uint32_t correlation_id, int code,
                      const char *message);

/* Broken framing: one error reply, then the connection closes. Logs the
 * peer and at most 64 sanitised bytes of the frame (rate-limited). */
void conn_protocol_error(struct conn *c, uint32_t correlation_id, int code,
                         const char *reason, const uint8_t *bytes, size_t n);

#endif /* KAPPA_BROKER_CONN_H */
