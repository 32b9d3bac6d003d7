/* libFuzzer target for the record batch decoder: batch_validate_all and the
 * batch reader over arbitrary bytes, as given and with CRCs made valid. */
#include <stddef.h>
#include <stdint.h>

#include "check_batches.h"
#include "common/log.h"

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
    check_batches_both(data, size);
    return 0;
}
