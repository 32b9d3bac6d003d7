/* Error codes shared by the Kappa broker, the wire protocol and libkappa. */
#ifndef KAPPA_ERRORS_H
#define KAPPA_ERRORS_H

/* Marks the declarations libkappa exports. The library is built with hidden
 * visibility by default, so everything else (its internals and the common/
 * code linked into it) stays out of the dynamic symbol table. */
#ifndef KAPPA_API
#if defined(__GNUC__) || defined(__clang__)
#define KAPPA_API __attribute__((visibility("default")))
#else
#define KAPPA_API
#endif
#endif

/* Codes travel on the wire: append new ones at the end, never renumber.
 * X(name, number, is_retriable, message) */
#define KAPPA_ERR_MAP(X)                                                       \
    X(OK, 0, 0, "success")                                                     \
    X(EPROTO, 1000, 0, "malformed request")                                    \
    X(ENOMEM, 1001, 1, "out of memory")                                        \
    X(EUNKNOWN_TOPIC, 1002, 0, "unknown topic")                                \
    X(EBAD_PARTITION, 1003, 0, "unknown partition")                            \
    X(EOFFSET_RANGE, 1004, 0, "offset out of range")                           \
    X(ETOOBIG, 1005, 0, "message too large")                                   \
    X(EUNKNOWN_API, 1006, 0, "unknown api")                                    \
    X(EVERSION, 1007, 0, "unsupported api version")                            \
    X(ETOPIC_EXISTS, 1008, 0, "topic already exists")                          \
    X(EINVAL, 1009, 0, "invalid argument")                                     \
    X(ECORRUPT, 1010, 0, "corrupt data")                                       \
    X(EIO, 1011, 1, "i/o error")                                               \
    X(ETIMEDOUT, 1012, 1, "timed out")                                         \
    X(ECANCELED, 1013, 1, "operation canceled")                                \
    X(EBUSY, 1014, 1, "resource busy, try again")                              \
    X(ENOT_LEADER, 1015, 1, "not leader for partition")                        \
    X(ETRANSPORT, 1016, 1, "connection failed")                                \
    X(ECONFIG, 1017, 0, "invalid configuration")                               \
    X(ESHUTDOWN, 1018, 1, "shutting down")                                     \
    X(ETOPIC_NAME, 1019, 0, "invalid topic name")                              \
    X(ECRC, 1020, 0, "checksum mismatch")                                      \
    X(ENOSPC, 1021, 1, "no space left on device")                              \
    X(EDUPLICATE, 1022, 0, "duplicate sequence number")                        \
    X(ESEQUENCE, 1023, 0, "out of order sequence number")                      \
    X(ENOENT, 1024, 0, "not found")                                            \
    X(ECOMPRESSION, 1025, 0, "compression failed")                             \
    X(EFENCED, 1026, 0, "producer fenced by a newer epoch")                    \
    X(EREPLICATION, 1027, 0, "replication factor above live brokers")

enum kappa_err {
#define KAPPA__ERR_ENUM(name, number, retriable, msg) KAPPA_##name = number,
    KAPPA_ERR_MAP(KAPPA__ERR_ENUM)
#undef KAPPA__ERR_ENUM
};

/* Fixed lowercase message for a code; "unknown error" for codes this build
 * does not know (a newer peer may send them). */
KAPPA_API const char *kappa_err_str(int code);

/* The code's symbolic name, e.g. "EUNKNOWN_TOPIC". */
KAPPA_API const char *kappa_err_name(int code);

/* Non-zero when repeating the same request later may succeed. */
KAPPA_API int kappa_err_is_retriable(int code);

#endif /* KAPPA_ERRORS_H */
