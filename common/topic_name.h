/* The one rule for topic names, shared by the broker, the metadata state
 * machine and the client. */
#ifndef KAPPA_COMMON_TOPIC_NAME_H
#define KAPPA_COMMON_TOPIC_NAME_H

#include <stddef.h>

#define KAPPA_TOPIC_NAME_BYTES_MAX 249

/* 1..249 bytes of [a-zA-Z0-9._-], and not "." or ".." (a topic name is
 * also a directory name). */
int kappa_topic_name_is_valid(const char *name, size_t len);

#endif /* KAPPA_COMMON_TOPIC_NAME_H */
