/* The PostgreSQL sink (libpq): the SQLite sink's tables, upserts keyed by
 * (key, window_start) and exactly-once checkpoints, each checkpoint one
 * PostgreSQL transaction whose writes are batched through COPY into
 * temporary tables and applied with one prepared statement per table. Its
 * operations are reached through sink_pg_ops (sink.h). */
#ifndef KAPPA_STREAMS_SINK_PG_H
#define KAPPA_STREAMS_SINK_PG_H

struct pg_sink;

/* Connects with the libpq conninfo (keywords or a URI), takes the job's
 * advisory lock (waiting up to 30 s for an instance that is still
 * shutting down: two live instances of one job never write together),
 * creates the system tables if missing, and prepares the statements.
 * Returns 0, KAPPA_EIO (with a message in errmsg, KAPPA_ERRMSG_SIZE, that
 * never contains the conninfo) or KAPPA_ENOMEM. */
int sink_pg_open(const char *conninfo, const char *job, struct pg_sink **out,
                 char *errmsg);
/* NULL is a no-op; a transaction still open is rolled back, and closing the
 * connection releases the advisory lock. */
void sink_pg_close(struct pg_sink *s);

#endif /* KAPPA_STREAMS_SINK_PG_H */
