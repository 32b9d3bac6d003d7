#include "consensus.h"

#include <raft.h>

const char *consensus_raft_version(void)
{
    /* raft 0.15.0 has no runtime version query; pkg-config pins >= 0.15. */
    return "0.15";
}
