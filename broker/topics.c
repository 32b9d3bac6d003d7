/* Topic registry and its files.
 *
 * Layout under the data directory:
 *
 *   DATA/topics/<name>/topic.meta     metadata, below
 *   DATA/topics/<name>/<partition>/   one log directory per partition
 *   DATA/staging/<name>/              a topic being created (not yet live)
 *   DATA/trash/<seq>-<name>/          a deleted topic whose files are being
 *                                     removed
 *
 * topic.meta is ASCII text, one `key=value` per line, at most
 * META_BYTES_MAX bytes:
 *
 *   kappa-topic=1                      format version
 *   partitions=<1..10000>
 *   replication_factor=<n>
 *   segment.bytes=<n>                  optional overrides of the broker
 *   segment.ms=<n>                     defaults, present only when set
 *   retention.bytes=<n>
 *   retention.ms=<n>
 *   crc32c=<8 lowercase hex digits>    CRC-32C of every byte before this
 *                                      line; always the last line
 *
 * Create happens in DATA/staging/<name>: the metadata file is written,
 * fsynced, then the directory is renamed into DATA/topics and both parents
 * are fsynced, so a crash leaves either no topic or a whole one. Delete
 * renames the topic directory into DATA/trash (the commit point) and
 * removes the files afterwards in the thread pool; startup empties staging
 * and trash.
 *
 * Happy path (delete): no group commit in flight, so the logs are closed and
 * the directory renamed at once. Failure modes: a group commit in flight
 * makes the delete wait for the partition's synced callback; the rename
 * failing leaves the topic deleted in memory but on disk (it reappears on
 * restart) and reports KAPPA_EIO. */
#include "topics.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/assert.h"
#include "common/crc32c.h"
#include "common/err.h"
#include "common/log.h"
#include "common/topic_name.h"

#define COMPONENT      "topics"
#define META_FILE      "topic.meta"
#define META_BYTES_MAX 1024
#define META_VERSION   1
#define N_BUCKETS      4096

static int make_dir(const char *path, char *errmsg)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        kappa_errmsg_printf(errmsg, "mkdir %s: %s", path, strerror(errno));
        return kappa_err_from_errno(errno);
    }
    return 0;
}

static int fsync_path(const char *path, char *errmsg)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rv = 0;
    if (fd < 0) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0 || fsync(fd) != 0) {
        kappa_errmsg_printf(errmsg, "fsync %s: %s", path, strerror(errno));
        rv = KAPPA_EIO;
    }
    if (fd >= 0) {
        close(fd);
    }
    return rv;
}

static int remove_entry(const char *path, const struct stat *st, int flag,
                        struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0) {
        kappa_log(KAPPA_LOG_WARN, COMPONENT, "remove %s: %s", path,
                  strerror(errno));
    }
    return 0;
}

/* rm -r; a missing path is fine. */
static void remove_tree(const char *path)
{
    (void)nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Empties a directory without removing it. */
static void empty_dir(const char *dir)
{
    char path[CONFIG_PATH_BYTES_MAX * 2];
    struct dirent *e;
    DIR *d = opendir(dir);
    if (d == NULL) {
        return;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        remove_tree(path);
    }
    closedir(d);
}

int topics_name_is_valid(const char *name, size_t len)
{
    return kappa_topic_name_is_valid(name, len);
}

static uint32_t hash_name(const char *name, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    }
    return h;
}

static struct topic **bucket_of(struct topics *t, const char *name, size_t len)
{
    return &t->buckets[hash_name(name, len) % t->n_buckets];
}

/* Finds a topic, deleting or not. */
static struct topic *lookup(struct topics *t, const char *name, size_t len)
{
    struct topic *topic = *bucket_of(t, name, len);
    for (; topic != NULL; topic = topic->next_in_bucket) {
        if (topic->name_len == len && memcmp(topic->name, name, len) == 0) {
            return topic;
        }
    }
    return NULL;
}

struct topic *topics_find(struct topics *t, const char *name, size_t len)
{
    struct topic *topic = lookup(t, name, len);
    return topic != NULL && !topic->is_deleting ? topic : NULL;
}

struct partition *topics_partition(struct topics *t, const char *name,
                                   size_t len, int64_t partition, int *err)
{
    struct topic *topic = topics_find(t, name, len);
    if (topic == NULL) {
        *err = KAPPA_EUNKNOWN_TOPIC;
        return NULL;
    }
    if (partition < 0 || partition >= topic->n_partitions) {
        *err = KAPPA_EBAD_PARTITION;
        return NULL;
    }
    return &topic->partitions[partition];
}

static void registry_insert(struct topics *t, struct topic *topic)
{
    struct topic **b = bucket_of(t, topic->name, topic->name_len);
    topic->next_in_bucket = *b;
    *b = topic;
    t->n_topics++;
}

static void registry_remove(struct topics *t, struct topic *topic)
{
    struct topic **pp = bucket_of(t, topic->name, topic->name_len);
    while (*pp != topic) {
        KAPPA_ASSERT(*pp != NULL);
        pp = &(*pp)->next_in_bucket;
    }
    *pp = topic->next_in_bucket;
    t->n_topics--;
}

/* Metadata encoding: see the comment at the top of the file. */
static size_t meta_encode(const struct topic *topic, char *out, size_t cap)
{
    const struct log_config *c = &topic->log_cfg;
    size_t n = (size_t)snprintf(out, cap,
                                "kappa-topic=%d\npartitions=%u\n"
                                "replication_factor=%u\n",
                                META_VERSION, topic->n_partitions,
                                topic->replication_factor);
    if (topic->overrides & TOPIC_OVERRIDE_SEGMENT_BYTES) {
        n += (size_t)snprintf(out + n, cap - n, "segment.bytes=%" PRIu64 "\n",
                              c->segment_bytes);
    }
    if (topic->overrides & TOPIC_OVERRIDE_SEGMENT_MS) {
        n += (size_t)snprintf(out + n, cap - n, "segment.ms=%" PRId64 "\n",
                              c->segment_ms);
    }
    if (topic->overrides & TOPIC_OVERRIDE_RETENTION_BYTES) {
        n += (size_t)snprintf(out + n, cap - n, "retention.bytes=%" PRId64 "\n",
                              c->retention_bytes);
    }
    if (topic->overrides & TOPIC_OVERRIDE_RETENTION_MS) {
        n += (size_t)snprintf(out + n, cap - n, "retention.ms=%" PRId64 "\n",
                              c->retention_ms);
    }
    n += (size_t)snprintf(out + n, cap - n, "crc32c=%08x\n", crc32c(out, n));
    KAPPA_ASSERT(n < cap);
    return n;
}

static int parse_i64_strict(const char *s, int64_t lo, int64_t hi, int64_t *v)
{
    char *end;
    long long x;
    errno = 0;
    x = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || x < lo || x > hi) {
        return -1;
    }
    *v = x;
    return 0;
}

/* Applies one "key=value" line of a metadata file. */
static int meta_apply(struct topic *topic, const char *key, const char *val)
{
    struct log_config *c = &topic->log_cfg;
    int64_t v;
    if (parse_i64_strict(val, -1, INT64_MAX, &v) != 0) {
        return -1;
    }
    if (strcmp(key, "kappa-topic") == 0) {
        return v == META_VERSION ? 0 : -1;
    } else if (strcmp(key, "partitions") == 0) {
        if (v < 1 || v > TOPIC_PARTITIONS_MAX) {
            return -1;
        }
        topic->n_partitions = (uint32_t)v;
    } else if (strcmp(key, "replication_factor") == 0) {
        topic->replication_factor = (uint32_t)(v < 1 ? 1 : v);
    } else if (strcmp(key, "segment.bytes") == 0 && v > 0) {
        c->segment_bytes = (uint64_t)v;
        topic->overrides |= TOPIC_OVERRIDE_SEGMENT_BYTES;
    } else if (strcmp(key, "segment.ms") == 0 && v > 0) {
        c->segment_ms = v;
        topic->overrides |= TOPIC_OVERRIDE_SEGMENT_MS;
    } else if (strcmp(key, "retention.bytes") == 0) {
        c->retention_bytes = v;
        topic->overrides |= TOPIC_OVERRIDE_RETENTION_BYTES;
    } else if (strcmp(key, "retention.ms") == 0) {
        c->retention_ms = v;
        topic->overrides |= TOPIC_OVERRIDE_RETENTION_MS;
    } else {
        return -1;
    }
    return 0;
}

/* Decodes buf[0..n) (NUL-terminated by the caller). Never trusts it: any
 * unexpected byte returns KAPPA_ECORRUPT. */
static int meta_decode(struct topic *topic, char *buf, size_t n)
{
    char *crc_line;
    char *line;
    char *save = NULL;
    unsigned long crc;
    char *end;

    crc_line = strstr(buf, "crc32c=");
    if (crc_line == NULL || (crc_line != buf && crc_line[-1] != '\n')) {
        return KAPPA_CORRUPT();
    }
    crc = strtoul(crc_line + 7, &end, 16);
    if (end != crc_line + 15 || *end != '\n' || end + 1 != buf + n ||
        crc != crc32c(buf, (size_t)(crc_line - buf))) {
        return KAPPA_CORRUPT();
    }
    *crc_line = '\0';
    topic->n_partitions = 0;
    for (line = strtok_r(buf, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            return KAPPA_CORRUPT();
        }
        *eq = '\0';
        if (meta_apply(topic, line, eq + 1) != 0) {
            return KAPPA_CORRUPT();
        }
    }
    return topic->n_partitions > 0 ? 0 : KAPPA_CORRUPT();
}

static int meta_read(struct topic *topic, const char *path, char *errmsg)
{
    char buf[META_BYTES_MAX + 1];
    ssize_t n;
    int rv;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", path, strerror(errno));
        return KAPPA_EIO;
    }
    n = read(fd, buf, sizeof buf);
    close(fd);
    if (n < 0) {
        kappa_errmsg_printf(errmsg, "read %s: %s", path, strerror(errno));
        return KAPPA_EIO;
    }
    if ((size_t)n > META_BYTES_MAX || memchr(buf, '\0', (size_t)n) != NULL) {
        kappa_errmsg_printf(errmsg, "%s: not a topic metadata file", path);
        return KAPPA_ECORRUPT;
    }
    buf[n] = '\0';
    rv = meta_decode(topic, buf, (size_t)n);
    if (rv != 0) {
        kappa_errmsg_printf(errmsg, "%s: corrupt metadata", path);
    }
    return rv;
}

static int meta_write(const struct topic *topic, const char *dir, char *errmsg)
{
    char path[CONFIG_PATH_BYTES_MAX * 2 + sizeof META_FILE + 1];
    char buf[META_BYTES_MAX];
    size_t n = meta_encode(topic, buf, sizeof buf);
    int fd;
    int rv = 0;

    snprintf(path, sizeof path, "%s/%s", dir, META_FILE);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        kappa_errmsg_printf(errmsg, "open %s: %s", path, strerror(errno));
        return kappa_err_from_errno(errno);
    }
    if (write(fd, buf, n) != (ssize_t)n || fsync(fd) != 0) {
        kappa_errmsg_printf(errmsg, "write %s: %s", path, strerror(errno));
        rv = errno == ENOSPC ? KAPPA_ENOSPC : KAPPA_EIO;
    }
    close(fd);
    return rv;
}

static struct topic *topic_new(struct topics *t, const char *name, size_t len)
{
    struct topic *topic = kappa_calloc(1, sizeof *topic);
    if (topic == NULL) {
        return NULL;
    }
    topic->topics = t;
    memcpy(topic->name, name, len);
    topic->name[len] = '\0';
    topic->name_len = len;
    topic->replication_factor = 1;
    topic->log_cfg = t->cfg->log;
    return topic;
}

static void topic_synced_cb(struct partition *p);

static void close_partitions(struct topic *topic, uint32_t n, int status)
{
    for (uint32_t i = 0; i < n; i++) {
        partition_close(&topic->partitions[i], status);
    }
    kappa_free(topic->partitions);
    topic->partitions = NULL;
}

/* Opens every partition log of a topic whose metadata is loaded. */
static int open_partitions(struct topics *t, struct topic *topic, char *errmsg)
{
    char dir[CONFIG_PATH_BYTES_MAX * 2];
    uint32_t i;
    int rv = 0;

    topic->partitions =
        kappa_calloc(topic->n_partitions, sizeof *topic->partitions);
    if (topic->partitions == NULL) {
        kappa_errmsg_printf(errmsg, "out of memory");
        return KAPPA_ENOMEM;
    }
    for (i = 0; i < topic->n_partitions; i++) {
        snprintf(dir, sizeof dir, "%s/%s/%u", t->topics_dir, topic->name, i);
        rv = partition_init(&topic->partitions[i], t->loop, i, dir,
                            &topic->log_cfg, topic_synced_cb, topic, errmsg);
        if (rv == 0) {
            topic->partitions[i].dirty_list = &t->dirty;
        }
        if (rv != 0) {
            kappa_errmsg_wrap(errmsg, "partition %u", i);
            close_partitions(topic, i, KAPPA_ESHUTDOWN);
            return rv;
        }
    }
    return 0;
}

/* Loads DATA/topics/<name>; logs and skips the topic on any error. */
static void load_topic(struct topics *t, const char *name)
{
    char path[CONFIG_PATH_BYTES_MAX * 2];
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    size_t len = strlen(name);
    struct topic *topic;
    int rv;

    if (!topics_name_is_valid(name, len)) {
        kappa_log(KAPPA_LOG_WARN, COMPONENT,
                  "ignoring directory with an invalid topic name");
        return;
    }
    topic = topic_new(t, name, len);
    if (topic == NULL) {
        kappa_log(KAPPA_LOG_ERROR, COMPONENT, "skip topic=%s: out of memory",
                  name);
        return;
    }
    snprintf(path, sizeof path, "%s/%s/%s", t->topics_dir, name, META_FILE);
    rv = meta_read(topic, path, errmsg);
    if (rv == 0) {
        rv = open_partitions(t, topic, errmsg);
    }
    if (rv != 0) {
        kappa_log(KAPPA_LOG_ERROR, COMPONENT, "skip topic=%s: %s rv=%s", name,
                  errmsg, kappa_err_name(rv));
        kappa_free(topic);
        return;
    }
    registry_insert(t, topic);
    kappa_log(KAPPA_LOG_INFO, COMPONENT, "loaded topic=%s partitions=%u", name,
              topic->n_partitions);
}

static int load_all(struct topics *t, char *errmsg)
{
    struct dirent *e;
    DIR *d = opendir(t->topics_dir);
    if (d == NULL) {
        kappa_errmsg_printf(errmsg, "opendir %s: %s", t->topics_dir,
                            strerror(errno));
        return KAPPA_EIO;
    }
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
            continue;
        }
        if (t->n_topics >= TOPICS_MAX) {
            kappa_log(KAPPA_LOG_ERROR, COMPONENT,
                      "more than %d topics; skipping the rest", TOPICS_MAX);
            break;
        }
        load_topic(t, e->d_name);
    }
    closedir(d);
    return 0;
}

int topics_open(struct topics *t, uv_loop_t *loop,
                const struct broker_config *cfg, char *errmsg)
{
    int rv;
    memset(t, 0, sizeof *t);
    t->loop = loop;
    list_init(&t->dirty);
    t->cfg = cfg;
    snprintf(t->topics_dir, sizeof t->topics_dir, "%s/topics", cfg->data_dir);
    snprintf(t->staging_dir, sizeof t->staging_dir, "%s/staging",
             cfg->data_dir);
    snprintf(t->trash_dir, sizeof t->trash_dir, "%s/trash", cfg->data_dir);
    /* A new directory entry is durable only once its parent is fsynced:
     * without the last fsync a power failure could lose DATA/topics and
     * with it every acknowledged topic (found by jepsen/lossyfs). */
    if ((rv = make_dir(t->topics_dir, errmsg)) != 0 ||
        (rv = make_dir(t->staging_dir, errmsg)) != 0 ||
        (rv = make_dir(t->trash_dir, errmsg)) != 0 ||
        (rv = fsync_path(cfg->data_dir, errmsg)) != 0) {
        return rv;
    }
    empty_dir(t->staging_dir);
    empty_dir(t->trash_dir);
    t->n_buckets = N_BUCKETS;
    t->buckets = kappa_calloc(t->n_buckets, sizeof *t->buckets);
    if (t->buckets == NULL) {
        kappa_errmsg_printf(errmsg, "out of memory");
        return KAPPA_ENOMEM;
    }
    rv = load_all(t, errmsg);
    if (rv != 0) {
        topics_close(t);
    }
    return rv;
}

void topics_foreach(struct topics *t, void (*fn)(struct topic *, void *),
                    void *arg)
{
    for (uint32_t b = 0; b < t->n_buckets; b++) {
        struct topic *topic = t->buckets[b];
        while (topic != NULL) {
            struct topic *next = topic->next_in_bucket;
            fn(topic, arg);
            topic = next;
        }
    }
}

static int topic_is_syncing(const struct topic *topic)
{
    for (uint32_t i = 0; i < topic->n_partitions; i++) {
        if (partition_is_syncing(&topic->partitions[i])) {
            return 1;
        }
    }
    return 0;
}

static void count_syncing(struct topic *topic, void *arg)
{
    *(int *)arg |= topic_is_syncing(topic);
}

int topics_is_syncing(struct topics *t)
{
    int syncing = 0;
    topics_foreach(t, count_syncing, &syncing);
    return syncing;
}

static void free_topic(struct topic *topic, void *arg)
{
    (void)arg;
    if (topic->partitions != NULL) {
        close_partitions(topic, topic->n_partitions, KAPPA_ESHUTDOWN);
    }
    kappa_free(topic);
}

void topics_close(struct topics *t)
{
    if (t->buckets == NULL) {
        return;
    }
    KAPPA_ASSERT(!topics_is_syncing(t));
    topics_foreach(t, free_topic, NULL);
    kappa_free(t->buckets);
    t->buckets = NULL;
    t->n_topics = 0;
}

/* Writes the metadata in staging and renames the directory into place. */
static int create_on_disk(struct topics *t, const struct topic *topic,
                          char *errmsg)
{
    char staged[CONFIG_PATH_BYTES_MAX * 2];
    char live[CONFIG_PATH_BYTES_MAX * 2];
    int rv;

    snprintf(staged, sizeof staged, "%s/%s", t->staging_dir, topic->name);
    snprintf(live, sizeof live, "%s/%s", t->topics_dir, topic->name);
    remove_tree(staged);
    if ((rv = make_dir(staged, errmsg)) != 0) {
        return rv;
    }
    if ((rv = meta_write(topic, staged, errmsg)) != 0 ||
        (rv = fsync_path(staged, errmsg)) != 0) {
        goto err_after_mkdir;
    }
    if (rename(staged, live) != 0) {
        kappa_errmsg_printf(errmsg, "rename %s: %s", live, strerror(errno));
        rv = KAPPA_EIO;
        goto err_after_mkdir;
    }
    if ((rv = fsync_path(t->topics_dir, errmsg)) != 0 ||
        (rv = fsync_path(t->staging_dir, errmsg)) != 0) {
        return rv; /* renamed: the topic may well exist after a restart */
    }
    return 0;

err_after_mkdir:
    remove_tree(staged);
    return rv;
}

/* Moves a topic directory into the trash: after this (and the fsync) the
 * topic is gone even if the node crashes before the files are removed. */
static int move_to_trash(struct topics *t, const struct topic *topic,
                         char *trashed, size_t trashed_cap, char *errmsg)
{
    char live[CONFIG_PATH_BYTES_MAX * 2];
    snprintf(live, sizeof live, "%s/%s", t->topics_dir, topic->name);
    snprintf(trashed, trashed_cap, "%s/%" PRIu64 "-%s", t->trash_dir,
             t->trash_seq++, topic->name);
    if (rename(live, trashed) != 0) {
        kappa_errmsg_printf(errmsg, "rename %s: %s", live, strerror(errno));
        return KAPPA_EIO;
    }
    return fsync_path(t->topics_dir, errmsg);
}

struct trash_work {
    uv_work_t req;
    char path[CONFIG_PATH_BYTES_MAX * 2];
};

static void trash_work_cb(uv_work_t *req)
{
    struct trash_work *w = req->data;
    remove_tree(w->path);
}

static void trash_done_cb(uv_work_t *req, int status)
{
    (void)status;
    kappa_free(req->data);
}

/* Removes the files off the loop; they are already out of the live tree, so
 * a failure here only leaks disk space until the next start. */
static void remove_in_background(struct topics *t, const char *path)
{
    struct trash_work *w = kappa_malloc(sizeof *w);
    if (w == NULL) {
        remove_tree(path);
        return;
    }
    w->req.data = w;
    snprintf(w->path, sizeof w->path, "%s", path);
    if (uv_queue_work(t->loop, &w->req, trash_work_cb, trash_done_cb) != 0) {
        remove_tree(path);
        kappa_free(w);
    }
}

/* Checks a create request against the registry. */
static int check_create(struct topics *t, const char *name, size_t len,
                        uint32_t n_partitions, char *errmsg)
{
    struct topic *existing;
    if (!topics_name_is_valid(name, len)) {
        kappa_errmsg_printf(errmsg,
                            "name: must be 1..%d bytes of "
                            "[a-zA-Z0-9._-], not . or ..",
                            TOPIC_NAME_BYTES_MAX);
        return KAPPA_ETOPIC_NAME;
    }
    existing = lookup(t, name, len);
    if (existing != NULL) {
        kappa_errmsg_printf(errmsg, existing->is_deleting
                                        ? "topic is being deleted"
                                        : "topic already exists");
        return existing->is_deleting ? KAPPA_EBUSY : KAPPA_ETOPIC_EXISTS;
    }
    if (t->n_topics >= TOPICS_MAX) {
        kappa_errmsg_printf(errmsg, "at most %d topics", TOPICS_MAX);
        return KAPPA_EINVAL;
    }
    if (n_partitions < 1 || n_partitions > TOPIC_PARTITIONS_MAX) {
        kappa_errmsg_printf(errmsg, "partitions: must be 1..%d",
                            TOPIC_PARTITIONS_MAX);
        return KAPPA_EINVAL;
    }
    return 0;
}

static void apply_overrides(struct topic *topic, unsigned overrides,
                            const struct log_config *log_cfg)
{
    topic->overrides = overrides;
    if (overrides & TOPIC_OVERRIDE_SEGMENT_BYTES) {
        topic->log_cfg.segment_bytes = log_cfg->segment_bytes;
    }
    if (overrides & TOPIC_OVERRIDE_SEGMENT_MS) {
        topic->log_cfg.segment_ms = log_cfg->segment_ms;
    }
    if (overrides & TOPIC_OVERRIDE_RETENTION_BYTES) {
        topic->log_cfg.retention_bytes = log_cfg->retention_bytes;
    }
    if (overrides & TOPIC_OVERRIDE_RETENTION_MS) {
        topic->log_cfg.retention_ms = log_cfg->retention_ms;
    }
}

int topics_create(struct topics *t, const char *name, uint32_t n_partitions,
                  uint32_t replication_factor, unsigned overrides,
                  const struct log_config *log_cfg, char *errmsg)
{
    char path[CONFIG_PATH_BYTES_MAX * 2];
    char ignored[KAPPA_ERRMSG_SIZE];
    size_t len = strlen(name);
    struct topic *topic;
    int rv = check_create(t, name, len, n_partitions, errmsg);

    if (rv != 0) {
        return rv;
    }
    topic = topic_new(t, name, len);
    if (topic == NULL) {
        kappa_errmsg_printf(errmsg, "out of memory");
        return KAPPA_ENOMEM;
    }
    topic->n_partitions = n_partitions;
    topic->replication_factor = replication_factor;
    apply_overrides(topic, overrides, log_cfg);
    rv = create_on_disk(t, topic, errmsg);
    if (rv != 0) {
        goto err_after_alloc;
    }
    rv = open_partitions(t, topic, errmsg);
    if (rv != 0) {
        goto err_after_create;
    }
    /* log_open made the partition directories; make their entries durable
     * before the reply says the topic exists. */
    snprintf(path, sizeof path, "%s/%s", t->topics_dir, name);
    if (fsync_path(path, ignored) != 0) {
        kappa_log(KAPPA_LOG_WARN, COMPONENT, "%s", ignored);
    }
    registry_insert(t, topic);
    kappa_log(KAPPA_LOG_INFO, COMPONENT, "created topic=%s partitions=%u", name,
              n_partitions);
    return 0;

err_after_create:
    if (move_to_trash(t, topic, path, sizeof path, ignored) == 0) {
        remove_in_background(t, path);
    }
err_after_alloc:
    kappa_free(topic);
    return rv;
}

/* Closes the logs, trashes the directory and frees the topic. */
static int finish_delete(struct topics *t, struct topic *topic, char *errmsg)
{
    char trashed[CONFIG_PATH_BYTES_MAX * 2];
    int rv;

    KAPPA_ASSERT(!topic_is_syncing(topic));
    close_partitions(topic, topic->n_partitions, KAPPA_EUNKNOWN_TOPIC);
    rv = move_to_trash(t, topic, trashed, sizeof trashed, errmsg);
    if (rv == 0) {
        remove_in_background(t, trashed);
        kappa_log(KAPPA_LOG_INFO, COMPONENT, "deleted topic=%s", topic->name);
    } else {
        kappa_log(KAPPA_LOG_ERROR, COMPONENT, "delete topic=%s: %s",
                  topic->name, errmsg);
    }
    registry_remove(t, topic);
    kappa_free(topic);
    return rv;
}

static void topic_synced_cb(struct partition *p)
{
    struct topic *topic = p->data;
    struct topics *t = topic->topics;
    char errmsg[KAPPA_ERRMSG_SIZE] = "";
    topics_delete_cb cb;
    void *data;
    int rv;

    if (topic->is_deleting && !topic_is_syncing(topic)) {
        cb = topic->delete_cb;
        data = topic->delete_data;
        rv = finish_delete(t, topic, errmsg);
        cb(data, rv);
    }
    if (t->idle_cb != NULL && !topics_is_syncing(t)) {
        t->idle_cb(t);
    }
}

int topics_delete(struct topics *t, struct topic *topic, topics_delete_cb cb,
                  void *data, char *errmsg)
{
    KAPPA_ASSERT(!topic->is_deleting);
    topic->is_deleting = 1;
    for (uint32_t i = 0; i < topic->n_partitions; i++) {
        topic->partitions[i].is_removing = 1;
    }
    if (!topic_is_syncing(topic)) {
        return finish_delete(t, topic, errmsg);
    }
    topic->delete_cb = cb;
    topic->delete_data = data;
    kappa_log(KAPPA_LOG_DEBUG, COMPONENT,
              "delete topic=%s waits for group commits", topic->name);
    return TOPICS_PENDING;
}

struct housekeep_arg {
    int64_t now_ms;
};

static void housekeep_topic(struct topic *topic, void *arg)
{
    const struct housekeep_arg *a = arg;
    if (topic->is_deleting) {
        return;
    }
    for (uint32_t i = 0; i < topic->n_partitions; i++) {
        struct partition *p = &topic->partitions[i];
        uint32_t n_deleted = 0;
        int rv = log_housekeep(p->log, a->now_ms, &n_deleted);
        if (rv != 0) {
            kappa_log(KAPPA_LOG_ERROR, COMPONENT,
                      "housekeeping topic=%s partition=%u rv=%s", topic->name,
                      i, kappa_err_name(rv));
        } else if (n_deleted > 0) {
            kappa_log(KAPPA_LOG_INFO, COMPONENT,
                      "retention deleted segments=%u topic=%s partition=%u "
                      "log_start=%" PRId64,
                      n_deleted, topic->name, i, log_start_offset(p->log));
        }
        /* Safety net: data appended while a sync could not start becomes
         * durable (and visible) here at the latest. */
        partition_maybe_sync(p);
    }
}

void topics_housekeep(struct topics *t, int64_t now_ms)
{
    struct housekeep_arg a = {now_ms};
    topics_foreach(t, housekeep_topic, &a);
}
