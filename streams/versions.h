/* Job versions in a SQLite database: switching the output views to a
 * version (promote), dropping a version (retire), and the status of every
 * version with its lag. */
#ifndef KAPPA_STREAMS_VERSIONS_H
#define KAPPA_STREAMS_VERSIONS_H

#include <sqlite3.h>

/* Inside a write transaction: promotes `version` of job `name` when the job
 * has no promoted version yet and none of the version's output names is
 * taken (the first version of a job serves at once). Returns 0 or KAPPA_EIO
 * with a message in errmsg (KAPPA_ERRMSG_SIZE). */
int versions_promote_first(sqlite3 *db, const char *name, const char *version,
                           char *errmsg);

#endif /* KAPPA_STREAMS_VERSIONS_H */
