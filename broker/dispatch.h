/* Request dispatch: validates the envelope of one frame and routes it to the
 * API handler. Every handler replies exactly once (or, for acks=0 produce,
 * never), now or later. Loop thread only. */
#ifndef KAPPA_BROKER_DISPATCH_H
#define KAPPA_BROKER_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "broker/conn.h"
#include "common/mp.h"

struct server;

/* Handles one frame body. The body borrows the connection's read buffer,
 * which stays put until this returns; produce rewrites batch headers in
 * place, so the body is writable. */
void dispatch_frame(struct conn *c, uint8_t *body, size_t n);

/* API handlers (args is positioned at the args map, already checked to be
 * well-formed msgpack). */
void api_hello(struct conn *c, uint32_t corr, struct mp_reader *args);
void api_metadata(struct conn *c, uint32_t corr, struct mp_reader *args);
void api_create_topic(struct conn *c, uint32_t corr, struct mp_reader *args);
void api_delete_topic(struct conn *c, uint32_t corr, struct mp_reader *args);
void api_list_topics(struct conn *c, uint32_t corr, struct mp_reader *args);
void api_produce(struct conn *c, uint32_t corr, struct mp_reader *args);
void api_fetch(struct conn *c, uint32_t corr, struct mp_reader *args);
void api_list_offsets(struct conn *c, uint32_t corr, struct mp_reader *args);

/* Answers every parked fetch now with what is available (shutdown). */
void fetch_answer_all(struct server *s);

/* Argument readers shared by the handlers. Each returns 0, or KAPPA_EINVAL
 * with "FIELD: expected ..." in errmsg; a type mismatch never fails the
 * reader, because the envelope was walked with mp_skip first. */
int args_key(struct mp_reader *r, const char **key, uint32_t *len,
             char *errmsg);
int args_int(struct mp_reader *r, const char *field, int64_t lo, int64_t hi,
             int64_t *v, char *errmsg);
int args_str(struct mp_reader *r, const char *field, const char **s,
             uint32_t *len, char *errmsg);
int args_bin(struct mp_reader *r, const char *field, const uint8_t **p,
             uint32_t *len, char *errmsg);
int args_array(struct mp_reader *r, const char *field, uint32_t max,
               uint32_t *n, char *errmsg);
int args_map(struct mp_reader *r, const char *field, uint32_t *n, char *errmsg);
/* Returns 1 and consumes a nil (an optional field given as nil). */
int args_nil(struct mp_reader *r);

/* Most parts in one request (docs/protocol.md). */
#define DISPATCH_PARTS_MAX 10000

#endif /* KAPPA_BROKER_DISPATCH_H */
