/* libFuzzer target for the Raft message decoder (consensus/rmsg.c): any
 * bytes a peer sends must decode or fail cleanly; a decoded message must
 * re-encode, decode again to the same group and type, and release without
 * leaks. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/buf.h"
#include "common/log.h"
#include "consensus/rmsg.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    kappa_log_set_level(KAPPA_LOG_OFF);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rmsg_limits lim;
    struct raft_message m, again;
    char address[RMSG_ADDRESS_BYTES_MAX + 1];
    char address2[RMSG_ADDRESS_BYTES_MAX + 1];
    uint64_t group_id, group_id2;
    struct buf out = {0};

    rmsg_limits_default(&lim);
    lim.entries_max = 1024;
    if (rmsg_decode(data, size, &lim, &group_id, &m, address) != 0) {
        return 0;
    }
    if (rmsg_encode(&out, group_id, &m) == 0) {
        if (rmsg_decode(out.data, out.len, &lim, &group_id2, &again,
                        address2) != 0 ||
            group_id2 != group_id || again.type != m.type) {
            abort();
        }
        rmsg_release(&again);
    }
    buf_free(&out);
    rmsg_release(&m);
    return 0;
}
