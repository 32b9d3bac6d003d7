/* The checkpoint encoding of one open window's partial aggregate (the
 * `state` column of kappa_window_state); the format is written out in
 * state.c. */
#ifndef KAPPA_STREAMS_STATE_H
#define KAPPA_STREAMS_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "window.h"

#define STATE_VERSION      1
#define STATE_HEADER_BYTES 38

/* Appends the encoding of a to out. Returns 0 or KAPPA_ENOMEM. */
int state_encode(const struct agg_state *a, enum kappa_agg_kind kind,
                 struct buf *out);
/* Decodes p[0..len) into *a (zeroed first; the caller frees
 * a->distinct with dset_free). Checks everything, as the bytes come from
 * disk: returns 0, KAPPA_ECORRUPT, KAPPA_ETOOBIG (more than distinct_max
 * values) or KAPPA_ENOMEM; on error *a holds nothing. */
int state_decode(const void *p, size_t len, enum kappa_agg_kind kind,
                 uint32_t distinct_max, struct agg_state *a);

#endif /* KAPPA_STREAMS_STATE_H */
