/* Logging: one line per event with time, level, node, component, message. */
#ifndef KAPPA_COMMON_LOG_H
#define KAPPA_COMMON_LOG_H

enum kappa_log_level {
    KAPPA_LOG_DEBUG = 0,
    KAPPA_LOG_INFO,
    KAPPA_LOG_WARN,
    KAPPA_LOG_ERROR,
    KAPPA_LOG_OFF,
};

extern int kappa_log_level_current;

/* Sets the minimum level printed; lines below it cost one comparison. */
void kappa_log_set_level(int level);

/* Parses "debug", "info", "warn", "error", "off"; returns -1 if unknown. */
int kappa_log_level_parse(const char *name);

/* Sets the node id printed on every line (-1 prints nothing). */
void kappa_log_set_node(long long node_id);

void kappa_log_write(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checks the level before evaluating the arguments (raft's Tracef). */
#define kappa_log(level, component, ...)                                       \
    do {                                                                       \
        if ((level) >= kappa_log_level_current) {                              \
            kappa_log_write((level), (component), __VA_ARGS__);                \
        }                                                                      \
    } while (0)

#endif /* KAPPA_COMMON_LOG_H */
