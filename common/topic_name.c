#include "topic_name.h"

int kappa_topic_name_is_valid(const char *name, size_t len)
{
    if (len == 0 || len > KAPPA_TOPIC_NAME_BYTES_MAX) {
        return 0;
    }
    if ((len == 1 && name[0] == '.') ||
        (len == 2 && name[0] == '.' && name[1] == '.')) {
        return 0;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
            return 0;
        }
    }
    return 1;
}
