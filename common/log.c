#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int kappa_log_level_current = KAPPA_LOG_INFO;
static long long log_node_id = -1;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};

void kappa_log_set_level(int level)
{
    kappa_log_level_current = level;
}

int kappa_log_level_parse(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error",
                                        "off"};
    for (int i = 0; i < (int)(sizeof names / sizeof names[0]); i++) {
        if (strcmp(name, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

void kappa_log_set_node(long long node_id)
{
    log_node_id = node_id;
}

void kappa_log_write(int level, const char *component, const char *fmt, ...)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    if (level < KAPPA_LOG_DEBUG || level > KAPPA_LOG_ERROR) {
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ %-5s ",
                          ts.tv_nsec / 1000000, level_names[level]);
    if (log_node_id >= 0 && n < sizeof line) {
        n += (size_t)snprintf(line + n, sizeof line - n, "node=%lld ",
                              log_node_id);
    }
    if (n < sizeof line) {
        n += (size_t)snprintf(line + n, sizeof line - n, "[%s] ", component);
    }
    if (n < sizeof line) {
        va_start(ap, fmt);
        n += (size_t)vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
    }
    if (n >= sizeof line) {
        n = sizeof line - 1;
    }
    line[n++] = '\n';
    /* One fwrite per line so concurrent processes sharing a file interleave
     * whole lines. */
    fwrite(line, 1, n, stderr);
}
