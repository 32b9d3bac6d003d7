/* kappa-lossyfs: a FUSE passthrough filesystem that loses what was not
 * fsynced when told to, simulating a power failure (Jepsen's LazyFS, our own
 * code on libfuse3).
 *
 * Usage: kappa-lossyfs [--meta=strict|immediate] BACKING MOUNTPOINT [FUSE
 * options]. It runs single-threaded in the foreground (-f -s are implied);
 * unmount with `fusermount3 -u MOUNTPOINT`.
 *
 * Semantics (the "disk" is BACKING; what is only in this process's memory is
 * the "page cache"):
 *
 * - File data. write() goes to a per-inode write-back buffer of dirty extents
 *   and never touches BACKING. read() and stat() see the dirty extents and
 *   the logical size. fsync()/fdatasync() of any descriptor of the inode
 *   writes the extents to BACKING in offset order, applies the size
 *   (truncations included) and fsyncs the backing file. A file opened with
 *   O_SYNC or O_DSYNC is flushed after every write (the kernel does not send
 *   FUSE an fsync for those when direct_io is on). truncate/ftruncate and
 *   O_TRUNC are buffered like writes.
 * - Directory entries, in --meta=strict (the default). create, mkdir,
 *   mknod, symlink, link, unlink, rmdir and rename are applied to BACKING at
 *   once, so the live view is always right, and recorded in an undo journal.
 *   An entry becomes durable when its parent directory is fsynced (for a
 *   rename, both parents), which is what POSIX requires (fsync(2): "an
 *   explicit fsync() on a file descriptor for the directory is also
 *   needed"). Unlinked files and replaced rename targets are kept in
 *   BACKING/.lossyfs-trash until then, so they can come back. fsync of a
 *   file does NOT make its own name durable (ext4 often does in practice;
 *   the point is to find code that relies on it).
 * - --meta=immediate: directory operations are durable at once (LazyFS's
 *   model); only file data is lost.
 * - chmod, chown and utimens go straight to BACKING (durable at once).
 * - Drop: writing anything to MOUNTPOINT/.lossyfs/drop discards every dirty
 *   extent and buffered size change, then undoes the journal newest first
 *   (removing names never made durable, restoring unlinked and replaced
 *   ones). The write returns only when that is done, so the caller knows
 *   the "power failure" is complete. Kill the writers first: descriptors
 *   that stay open keep working on the surviving state.
 *
 * Undo is by path, newest first. If a newer journal entry was made durable
 * while an older one was not (e.g. a file created and its directory fsynced
 * inside a directory whose own entry was never fsynced), undoing the older
 * entry removes the newer one with it, as a real crash would.
 *
 * Limits: LOSSYFS_DIRTY_BYTES_MAX bytes of dirty data in memory (writes past
 * it fail with ENOSPC); LOSSYFS_JOURNAL_MAX pending directory operations
 * (past it, ENOSPC). mmap of files is not supported (direct_io). */
#define FUSE_USE_VERSION 31

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <fuse.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <unistd.h>

#define LOSSYFS_DIRTY_BYTES_MAX ((size_t)4 << 30)
#define LOSSYFS_JOURNAL_MAX     1000000
#define N_BUCKETS               1024
#define TRASH_NAME              ".lossyfs-trash"
#define TRASH_PATH              "/" TRASH_NAME
#define CTL_DIR                 "/.lossyfs"
#define CTL_DROP                "/.lossyfs/drop"
#define CTL_FH                  UINT64_MAX

/* One run of dirty bytes [off, off + len) of a file. */
struct extent {
    off_t off;
    size_t len;
    size_t cap;
    char *data;
};

/* The page cache of one backing inode. floor: bytes [0, floor) of the
 * backing file are still valid (truncations lower it); size: the logical
 * size seen by readers. */
struct node {
    dev_t dev;
    ino_t ino;
    off_t size;
    off_t floor;
    struct extent *ext;
    size_t n_ext;
    size_t cap_ext;
    int n_open;
    int is_dirty; /* written or truncated since the last flush */
    struct node *next;
};

struct handle {
    int fd;
    int flags;
    struct node *node;
};

enum jop { J_CREATE, J_MKDIR, J_UNLINK, J_RMDIR, J_RENAME };

/* One directory operation not yet durable. path/path2 are mount paths
 * ("/a/b"); trash is the name under TRASH_PATH holding what the operation
 * removed (unlink, or a replaced rename target), or NULL. */
struct jentry {
    enum jop op;
    mode_t mode;
    char *path;
    char *path2;
    char *trash;
    int need_src; /* parent of path must still be fsynced */
    int need_dst; /* parent of path2 must still be fsynced (rename) */
    struct jentry *prev;
};

static struct {
    char backing[PATH_MAX];
    int root_fd;
    int is_strict;
    struct node *buckets[N_BUCKETS];
    size_t dirty_bytes;
    struct jentry *journal_tail; /* newest */
    size_t n_journal;
    uint64_t trash_seq;
} g;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void logf_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)fputs("lossyfs: ", stderr);
    (void)vfprintf(stderr, fmt, ap);
    (void)fputc('\n', stderr);
    va_end(ap);
}

/* The path relative to the backing root, for the *at() calls. */
static const char *rel(const char *path)
{
    return (path[0] == '/' && path[1] == '\0') ? "." : path + 1;
}

static int is_hidden(const char *path)
{
    size_t n = strlen(TRASH_PATH);
    return strncmp(path, TRASH_PATH, n) == 0 &&
           (path[n] == '\0' || path[n] == '/');
}

static int is_ctl(const char *path)
{
    size_t n = strlen(CTL_DIR);
    return strncmp(path, CTL_DIR, n) == 0 &&
           (path[n] == '\0' || path[n] == '/');
}

/* Writes the parent of PATH into OUT ("/a/b" -> "/a", "/a" -> "/"). */
static void parent_of(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = (slash == NULL || slash == path) ? 1 : (size_t)(slash - path);
    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(out, path, n);
    out[n] = '\0';
}

/* ---- nodes: the per-inode write-back buffer ---------------------------- */

static struct node **bucket_of(dev_t dev, ino_t ino)
{
    return &g.buckets[((uint64_t)ino ^ (uint64_t)dev) % N_BUCKETS];
}

static struct node *node_find(dev_t dev, ino_t ino)
{
    for (struct node *n = *bucket_of(dev, ino); n != NULL; n = n->next) {
        if (n->dev == dev && n->ino == ino) {
            return n;
        }
    }
    return NULL;
}

/* Finds or creates the node of the inode described by ST. */
static struct node *node_get(const struct stat *st)
{
    struct node *n = node_find(st->st_dev, st->st_ino);
    struct node **b;
    if (n != NULL) {
        return n;
    }
    n = calloc(1, sizeof *n);
    if (n == NULL) {
        return NULL;
    }
    n->dev = st->st_dev;
    n->ino = st->st_ino;
    n->size = st->st_size;
    n->floor = st->st_size;
    b = bucket_of(st->st_dev, st->st_ino);
    n->next = *b;
    *b = n;
    return n;
}

static int node_is_dirty(const struct node *n)
{
    return n->is_dirty;
}

static void extents_clear(struct node *n)
{
    for (size_t i = 0; i < n->n_ext; i++) {
        g.dirty_bytes -= n->ext[i].len;
        free(n->ext[i].data);
    }
    n->n_ext = 0;
}

static void node_unlink_free(struct node *n)
{
    struct node **p = bucket_of(n->dev, n->ino);
    while (*p != n) {
        p = &(*p)->next;
    }
    *p = n->next;
    extents_clear(n);
    free(n->ext);
    free(n);
}

/* Frees N if nothing refers to it and it holds nothing. */
static void node_maybe_free(struct node *n)
{
    if (n->n_open == 0 && !node_is_dirty(n)) {
        node_unlink_free(n);
    }
}

static int ext_reserve(struct node *n, size_t want)
{
    struct extent *e;
    size_t cap;
    if (want <= n->cap_ext) {
        return 0;
    }
    cap = n->cap_ext == 0 ? 8 : n->cap_ext * 2;
    while (cap < want) {
        cap *= 2;
    }
    e = realloc(n->ext, cap * sizeof *e);
    if (e == NULL) {
        return -ENOMEM;
    }
    n->ext = e;
    n->cap_ext = cap;
    return 0;
}

/* Appends to the last extent when the write continues it (the common case
 * of a log), growing its buffer geometrically. Returns 1 when done. */
static int ext_try_append(struct node *n, const char *buf, size_t len,
                          off_t off)
{
    struct extent *last;
    if (n->n_ext == 0) {
        return 0;
    }
    last = &n->ext[n->n_ext - 1];
    if (last->off + (off_t)last->len != off) {
        return 0;
    }
    if (last->len + len > last->cap) {
        size_t cap = last->cap * 2;
        char *d;
        while (cap < last->len + len) {
            cap *= 2;
        }
        d = realloc(last->data, cap);
        if (d == NULL) {
            return -ENOMEM;
        }
        last->data = d;
        last->cap = cap;
    }
    memcpy(last->data + last->len, buf, len);
    last->len += len;
    return 1;
}

/* Cuts [off, end) out of every extent, splitting one that spans it. */
static int ext_punch(struct node *n, off_t off, off_t end)
{
    for (size_t i = 0; i < n->n_ext; i++) {
        struct extent *e = &n->ext[i];
        off_t e_end = e->off + (off_t)e->len;
        if (e_end <= off || e->off >= end) {
            continue;
        }
        if (e->off < off && e_end > end) { /* split: keep both sides */
            struct extent right;
            int rv = ext_reserve(n, n->n_ext + 1);
            if (rv != 0) {
                return rv;
            }
            e = &n->ext[i];
            right.off = end;
            right.len = (size_t)(e_end - end);
            right.cap = right.len;
            right.data = malloc(right.len);
            if (right.data == NULL) {
                return -ENOMEM;
            }
            memcpy(right.data, e->data + (end - e->off), right.len);
            e->len = (size_t)(off - e->off);
            memmove(&n->ext[i + 2], &n->ext[i + 1],
                    (n->n_ext - i - 1) * sizeof *e);
            n->ext[i + 1] = right;
            n->n_ext++;
            g.dirty_bytes -= (size_t)(end - off);
            return 0;
        }
        if (e->off < off) { /* keep the left part */
            g.dirty_bytes -= (size_t)(e_end - off);
            e->len = (size_t)(off - e->off);
        } else if (e_end > end) { /* keep the right part */
            size_t cut = (size_t)(end - e->off);
            memmove(e->data, e->data + cut, e->len - cut);
            e->len -= cut;
            e->off = end;
            g.dirty_bytes -= cut;
        } else { /* wholly covered */
            g.dirty_bytes -= e->len;
            free(e->data);
            memmove(e, e + 1, (n->n_ext - i - 1) * sizeof *e);
            n->n_ext--;
            i--;
        }
    }
    return 0;
}

/* Records a write of LEN bytes at OFF in the page cache. */
static int node_write(struct node *n, const char *buf, size_t len, off_t off)
{
    struct extent e;
    size_t at;
    int rv;

    if (g.dirty_bytes + len > LOSSYFS_DIRTY_BYTES_MAX) {
        return -ENOSPC;
    }
    rv = ext_try_append(n, buf, len, off);
    if (rv == 0) {
        if ((rv = ext_punch(n, off, off + (off_t)len)) != 0 ||
            (rv = ext_reserve(n, n->n_ext + 1)) != 0) {
            return rv;
        }
        e.off = off;
        e.len = len;
        e.cap = len < 4096 ? 4096 : len;
        e.data = malloc(e.cap);
        if (e.data == NULL) {
            return -ENOMEM;
        }
        memcpy(e.data, buf, len);
        for (at = 0; at < n->n_ext && n->ext[at].off < off; at++) {
        }
        memmove(&n->ext[at + 1], &n->ext[at], (n->n_ext - at) * sizeof e);
        n->ext[at] = e;
        n->n_ext++;
    } else if (rv < 0) {
        return rv;
    }
    g.dirty_bytes += len;
    n->is_dirty = 1;
    if (off + (off_t)len > n->size) {
        n->size = off + (off_t)len;
    }
    return 0;
}

static int node_truncate(struct node *n, off_t size)
{
    int rv = ext_punch(n, size, INT64_MAX);
    if (rv != 0) {
        return rv;
    }
    if (size < n->floor) {
        n->floor = size;
    }
    n->size = size;
    n->is_dirty = 1;
    return 0;
}

/* Reads [off, off + len) as the page cache sees it. */
static ssize_t node_read(struct node *n, int fd, char *buf, size_t len,
                         off_t off)
{
    off_t end;
    if (off >= n->size) {
        return 0;
    }
    end = off + (off_t)len > n->size ? n->size : off + (off_t)len;
    len = (size_t)(end - off);
    memset(buf, 0, len);
    if (off < n->floor) {
        off_t b_end = end < n->floor ? end : n->floor;
        ssize_t got = pread(fd, buf, (size_t)(b_end - off), off);
        if (got < 0) {
            return -errno;
        }
    }
    for (size_t i = 0; i < n->n_ext; i++) {
        const struct extent *e = &n->ext[i];
        off_t lo = e->off > off ? e->off : off;
        off_t e_end = e->off + (off_t)e->len;
        off_t hi = e_end < end ? e_end : end;
        if (lo < hi) {
            memcpy(buf + (lo - off), e->data + (lo - e->off),
                   (size_t)(hi - lo));
        }
    }
    return (ssize_t)len;
}

static int pwrite_all(int fd, const char *buf, size_t len, off_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, buf, len, off);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
        off += n;
    }
    return 0;
}

/* Makes the page cache of N durable through FD (opened for writing). */
static int node_flush(struct node *n, int fd, int datasync)
{
    int rv;
    if (node_is_dirty(n)) {
        struct stat st;
        if (fstat(fd, &st) != 0) {
            return -errno;
        }
        if (n->floor < st.st_size && ftruncate(fd, n->floor) != 0) {
            return -errno;
        }
        for (size_t i = 0; i < n->n_ext; i++) {
            rv = pwrite_all(fd, n->ext[i].data, n->ext[i].len, n->ext[i].off);
            if (rv != 0) {
                return rv;
            }
        }
        if (ftruncate(fd, n->size) != 0) {
            return -errno;
        }
        extents_clear(n);
        n->floor = n->size;
        n->is_dirty = 0;
    }
    rv = datasync ? fdatasync(fd) : fsync(fd);
    return rv != 0 ? -errno : 0;
}

/* ---- the directory journal -------------------------------------------- */

static const char *jop_name(enum jop op)
{
    static const char *names[] = {"create", "mkdir", "unlink", "rmdir",
                                  "rename"};
    return names[op];
}

static char *dup_or_null(const char *s)
{
    return s == NULL ? NULL : strdup(s);
}

static int journal_add(enum jop op, const char *path, const char *path2,
                       const char *trash, mode_t mode)
{
    struct jentry *j;
    if (g.n_journal >= LOSSYFS_JOURNAL_MAX) {
        return -ENOSPC;
    }
    j = calloc(1, sizeof *j);
    if (j == NULL) {
        return -ENOMEM;
    }
    j->op = op;
    j->mode = mode;
    j->path = strdup(path);
    j->path2 = dup_or_null(path2);
    j->trash = dup_or_null(trash);
    if (j->path == NULL || (path2 != NULL && j->path2 == NULL) ||
        (trash != NULL && j->trash == NULL)) {
        free(j->path);
        free(j->path2);
        free(j->trash);
        free(j);
        return -ENOMEM;
    }
    j->need_src = 1;
    j->need_dst = path2 != NULL;
    j->prev = g.journal_tail;
    g.journal_tail = j;
    g.n_journal++;
    return 0;
}

static void jentry_free(struct jentry *j)
{
    free(j->path);
    free(j->path2);
    free(j->trash);
    free(j);
}

static int remove_one(const char *path, const struct stat *st, int flag,
                      struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) {
        logf_("remove %s: %s", path, strerror(errno));
    }
    return 0;
}

/* Removes REL_PATH (relative to the backing root) and everything below. */
static void remove_tree(const char *rel_path)
{
    char abs[PATH_MAX * 2];
    if (unlinkat(g.root_fd, rel_path, 0) == 0 || errno == ENOENT) {
        return;
    }
    (void)snprintf(abs, sizeof abs, "%s/%s", g.backing, rel_path);
    if (nftw(abs, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        logf_("remove %s: %s", abs, strerror(errno));
    }
}

static void trash_rel(const char *trash, char *out, size_t cap)
{
    (void)snprintf(out, cap, "%s/%s", TRASH_NAME, trash);
}

/* The operation is durable: forget how to undo it. */
static void jentry_commit(struct jentry *j)
{
    if (j->trash != NULL) {
        char t[PATH_MAX];
        trash_rel(j->trash, t, sizeof t);
        remove_tree(t);
    }
}

static void warn_undo(const struct jentry *j, const char *what)
{
    if (errno != ENOENT) {
        logf_("undo %s %s: %s", what, j->path, strerror(errno));
    }
}

/* Reverts one operation on the backing directory. */
static void jentry_undo(const struct jentry *j)
{
    char t[PATH_MAX];
    if (j->trash != NULL) {
        trash_rel(j->trash, t, sizeof t);
    }
    switch (j->op) {
    case J_CREATE:
    case J_MKDIR:
        remove_tree(rel(j->path));
        break;
    case J_UNLINK:
        if (renameat(g.root_fd, t, g.root_fd, rel(j->path)) != 0) {
            warn_undo(j, "unlink");
        }
        break;
    case J_RMDIR:
        if (mkdirat(g.root_fd, rel(j->path), j->mode) != 0) {
            warn_undo(j, "rmdir");
        }
        break;
    case J_RENAME:
        if (renameat(g.root_fd, rel(j->path2), g.root_fd, rel(j->path)) != 0) {
            warn_undo(j, "rename");
        }
        if (j->trash != NULL &&
            renameat(g.root_fd, t, g.root_fd, rel(j->path2)) != 0) {
            warn_undo(j, "rename target");
        }
        break;
    }
}

/* fsync of directory DIR: every entry whose parent is DIR is durable. An
 * entry is committed only when all of its parents were fsynced. */
static void journal_fsyncdir(const char *dir)
{
    struct jentry **link = &g.journal_tail;
    char parent[PATH_MAX];
    while (*link != NULL) {
        struct jentry *j = *link;
        parent_of(j->path, parent, sizeof parent);
        if (strcmp(parent, dir) == 0) {
            j->need_src = 0;
        }
        if (j->path2 != NULL) {
            parent_of(j->path2, parent, sizeof parent);
            if (strcmp(parent, dir) == 0) {
                j->need_dst = 0;
            }
        }
        if (!j->need_src && !j->need_dst) {
            *link = j->prev;
            jentry_commit(j);
            jentry_free(j);
            g.n_journal--;
        } else {
            link = &j->prev;
        }
    }
}

/* Journals an operation already applied. Without room in the journal the
 * operation is made durable at once instead (the safe direction: nothing
 * is lost that should not be) and the caller still succeeds. */
static int journal_or_commit(enum jop op, const char *path, const char *path2,
                             const char *trash, mode_t mode)
{
    if (journal_add(op, path, path2, trash, mode) != 0) {
        struct jentry j = {.op = op, .trash = (char *)trash};
        logf_("journal full: %s %s is durable at once", jop_name(op), path);
        jentry_commit(&j);
    }
    return 0;
}

/* Moves PATH into the trash; its new name is written to TRASH. */
static int trash_move(const char *path, char *trash, size_t cap)
{
    char t[PATH_MAX];
    (void)snprintf(trash, cap, "%" PRIu64, g.trash_seq++);
    trash_rel(trash, t, sizeof t);
    if (renameat(g.root_fd, rel(path), g.root_fd, t) != 0) {
        return -errno;
    }
    return 0;
}

/* ---- drop: the power failure ------------------------------------------ */

static void drop_all(void)
{
    size_t n_nodes = 0, n_journal = g.n_journal, bytes = g.dirty_bytes;
    size_t n_logged = 0;
    for (int b = 0; b < N_BUCKETS; b++) {
        struct node *n = g.buckets[b];
        while (n != NULL) {
            struct node *next = n->next;
            n_nodes += node_is_dirty(n);
            extents_clear(n);
            n->is_dirty = 0;
            n->floor = -1; /* re-read from the backing file, below */
            if (n->n_open == 0) {
                node_unlink_free(n);
            }
            n = next;
        }
    }
    while (g.journal_tail != NULL) {
        struct jentry *j = g.journal_tail;
        g.journal_tail = j->prev;
        if (n_logged++ < 100) { /* say what the power failure took */
            logf_("drop: undo %s %s%s%s", jop_name(j->op), j->path,
                  j->path2 != NULL ? " -> " : "",
                  j->path2 != NULL ? j->path2 : "");
        }
        jentry_undo(j);
        jentry_free(j);
    }
    g.n_journal = 0;
    logf_("drop: %zu dirty bytes in %zu files, %zu directory operations", bytes,
          n_nodes, n_journal);
}

/* A node reset by a drop takes its size from the backing file again. */
static void node_refresh(struct node *n, int fd)
{
    struct stat st;
    if (n->floor == -1 && fstat(fd, &st) == 0) {
        n->size = st.st_size;
        n->floor = st.st_size;
    }
}

/* ---- FUSE operations --------------------------------------------------- */

/* The handle behind fi->fh (set by open_handle; never CTL_FH here). */
static struct handle *handle_of(const struct fuse_file_info *fi)
{
    /* fh holds a pointer, by libfuse's convention. */
    /* NOLINTNEXTLINE(performance-no-int-to-ptr) */
    return (struct handle *)(uintptr_t)fi->fh;
}

static void *lfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
    (void)conn;
    /* Every read and write must reach us, or the kernel's page cache would
     * hide a drop. */
    cfg->direct_io = 1;
    cfg->kernel_cache = 0;
    cfg->entry_timeout = 0;
    cfg->attr_timeout = 0;
    cfg->negative_timeout = 0;
    cfg->hard_remove = 1;
    cfg->use_ino = 1;
    return NULL;
}

static int ctl_getattr(const char *path, struct stat *st)
{
    memset(st, 0, sizeof *st);
    if (strcmp(path, CTL_DIR) == 0) {
        st->st_mode = S_IFDIR | 0500;
        st->st_nlink = 2;
        return 0;
    }
    if (strcmp(path, CTL_DROP) == 0) {
        st->st_mode = S_IFREG | 0200;
        st->st_nlink = 1;
        return 0;
    }
    return -ENOENT;
}

static int lfs_getattr(const char *path, struct stat *st,
                       struct fuse_file_info *fi)
{
    struct node *n;
    if (is_ctl(path)) {
        return ctl_getattr(path, st);
    }
    if (is_hidden(path)) {
        return -ENOENT;
    }
    if (fi != NULL && fi->fh != CTL_FH) {
        const struct handle *h = handle_of(fi);
        if (fstat(h->fd, st) != 0) {
            return -errno;
        }
    } else if (fstatat(g.root_fd, rel(path), st, AT_SYMLINK_NOFOLLOW) != 0) {
        return -errno;
    }
    n = S_ISREG(st->st_mode) ? node_find(st->st_dev, st->st_ino) : NULL;
    if (n != NULL && n->floor != -1) {
        st->st_size = n->size;
    }
    return 0;
}

static int lfs_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
                       off_t offset, struct fuse_file_info *fi,
                       enum fuse_readdir_flags flags)
{
    int fd;
    DIR *d;
    struct dirent *de;
    int is_root = strcmp(path, "/") == 0;
    (void)offset;
    (void)fi;
    (void)flags;
    if (is_ctl(path)) {
        fill(buf, ".", NULL, 0, 0);
        fill(buf, "..", NULL, 0, 0);
        fill(buf, "drop", NULL, 0, 0);
        return 0;
    }
    fd = openat(g.root_fd, rel(path), O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        return -errno;
    }
    d = fdopendir(fd);
    if (d == NULL) {
        int e = errno;
        close(fd);
        return -e;
    }
    while ((de = readdir(d)) != NULL) {
        if (is_root && strcmp(de->d_name, TRASH_NAME) == 0) {
            continue;
        }
        if (fill(buf, de->d_name, NULL, 0, 0) != 0) {
            break;
        }
    }
    closedir(d);
    return 0;
}

static int lfs_fsyncdir(const char *path, int datasync,
                        struct fuse_file_info *fi)
{
    int fd, rv = 0;
    (void)datasync;
    (void)fi;
    if (is_ctl(path)) {
        return 0;
    }
    fd = openat(g.root_fd, rel(path), O_RDONLY | O_DIRECTORY);
    if (fd < 0) {
        return -errno;
    }
    if (fsync(fd) != 0) {
        rv = -errno;
    }
    close(fd);
    if (rv == 0) {
        journal_fsyncdir(path);
    }
    return rv;
}

/* Applies a directory operation; in strict mode also journals it. */
static int finish_dirop(int sys_rv, enum jop op, const char *path, mode_t mode)
{
    if (sys_rv != 0) {
        return -errno;
    }
    if (!g.is_strict) {
        return 0;
    }
    return journal_or_commit(op, path, NULL, NULL, mode);
}

static int lfs_mkdir(const char *path, mode_t mode)
{
    if (is_ctl(path) || is_hidden(path)) {
        return -EPERM;
    }
    return finish_dirop(mkdirat(g.root_fd, rel(path), mode), J_MKDIR, path,
                        mode);
}

static int lfs_mknod(const char *path, mode_t mode, dev_t rdev)
{
    if (is_ctl(path) || is_hidden(path)) {
        return -EPERM;
    }
    return finish_dirop(mknodat(g.root_fd, rel(path), mode, rdev), J_CREATE,
                        path, mode);
}

static int lfs_symlink(const char *target, const char *path)
{
    if (is_ctl(path) || is_hidden(path)) {
        return -EPERM;
    }
    return finish_dirop(symlinkat(target, g.root_fd, rel(path)), J_CREATE, path,
                        0);
}

static int lfs_link(const char *from, const char *path)
{
    if (is_ctl(path) || is_hidden(path) || is_ctl(from) || is_hidden(from)) {
        return -EPERM;
    }
    return finish_dirop(linkat(g.root_fd, rel(from), g.root_fd, rel(path), 0),
                        J_CREATE, path, 0);
}

static int lfs_readlink(const char *path, char *buf, size_t size)
{
    ssize_t n;
    if (size == 0) {
        return -EINVAL;
    }
    n = readlinkat(g.root_fd, rel(path), buf, size - 1);
    if (n < 0) {
        return -errno;
    }
    buf[n] = '\0';
    return 0;
}

static int lfs_unlink(const char *path)
{
    char trash[64];
    int rv;
    if (is_ctl(path) || is_hidden(path)) {
        return -EPERM;
    }
    if (!g.is_strict) {
        return unlinkat(g.root_fd, rel(path), 0) != 0 ? -errno : 0;
    }
    rv = trash_move(path, trash, sizeof trash);
    if (rv != 0) {
        return rv;
    }
    return journal_or_commit(J_UNLINK, path, NULL, trash, 0);
}

static int lfs_rmdir(const char *path)
{
    struct stat st;
    if (is_ctl(path) || is_hidden(path)) {
        return -EPERM;
    }
    if (fstatat(g.root_fd, rel(path), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return -errno;
    }
    return finish_dirop(unlinkat(g.root_fd, rel(path), AT_REMOVEDIR), J_RMDIR,
                        path, st.st_mode & 07777);
}

static int lfs_rename(const char *from, const char *to, unsigned int flags)
{
    char trash[64];
    struct stat st;
    int has_target, rv;
    if (is_ctl(from) || is_hidden(from) || is_ctl(to) || is_hidden(to)) {
        return -EPERM;
    }
    if (flags & ~(unsigned int)RENAME_NOREPLACE) {
        return -EINVAL;
    }
    if (fstatat(g.root_fd, rel(from), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        return -errno;
    }
    has_target = fstatat(g.root_fd, rel(to), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (has_target && (flags & RENAME_NOREPLACE)) {
        return -EEXIST;
    }
    if (!g.is_strict) {
        return renameat(g.root_fd, rel(from), g.root_fd, rel(to)) != 0 ? -errno
                                                                       : 0;
    }
    if (has_target && (rv = trash_move(to, trash, sizeof trash)) != 0) {
        return rv;
    }
    if (renameat(g.root_fd, rel(from), g.root_fd, rel(to)) != 0) {
        rv = -errno;
        if (has_target) { /* put the target back */
            char t[PATH_MAX];
            trash_rel(trash, t, sizeof t);
            (void)renameat(g.root_fd, t, g.root_fd, rel(to));
        }
        return rv;
    }
    return journal_or_commit(J_RENAME, from, to, has_target ? trash : NULL, 0);
}

static int lfs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    (void)fi;
    if (is_ctl(path) || is_hidden(path)) {
        return -EPERM;
    }
    return fchmodat(g.root_fd, rel(path), mode, 0) != 0 ? -errno : 0;
}

static int lfs_chown(const char *path, uid_t uid, gid_t gid,
                     struct fuse_file_info *fi)
{
    (void)fi;
    if (is_ctl(path) || is_hidden(path)) {
        return -EPERM;
    }
    return fchownat(g.root_fd, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW) != 0
               ? -errno
               : 0;
}

static int lfs_utimens(const char *path, const struct timespec tv[2],
                       struct fuse_file_info *fi)
{
    (void)fi;
    if (is_ctl(path)) {
        return 0;
    }
    if (is_hidden(path)) {
        return -EPERM;
    }
    return utimensat(g.root_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW) != 0
               ? -errno
               : 0;
}

static int lfs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
    struct stat st;
    struct node *n;
    int rv;
    if (is_ctl(path)) {
        return 0;
    }
    if (is_hidden(path)) {
        return -EPERM;
    }
    if (fi != NULL && fi->fh != CTL_FH) {
        const struct handle *h = handle_of(fi);
        node_refresh(h->node, h->fd);
        return node_truncate(h->node, size);
    }
    if (fstatat(g.root_fd, rel(path), &st, 0) != 0) {
        return -errno;
    }
    if (!S_ISREG(st.st_mode)) {
        return -EINVAL;
    }
    n = node_get(&st);
    if (n == NULL) {
        return -ENOMEM;
    }
    if (n->floor == -1) {
        n->size = st.st_size;
        n->floor = st.st_size;
    }
    rv = node_truncate(n, size);
    node_maybe_free(n);
    return rv;
}

/* Opens the backing file for FI (read-write when possible, so fsync can
 * write the page cache back) and attaches its node. */
static int open_handle(int fd, struct fuse_file_info *fi)
{
    struct handle *h;
    struct stat st;
    int rv;
    if (fstat(fd, &st) != 0) {
        rv = -errno;
        close(fd);
        return rv;
    }
    h = calloc(1, sizeof *h);
    if (h == NULL || (h->node = node_get(&st)) == NULL) {
        free(h);
        close(fd);
        return -ENOMEM;
    }
    h->fd = fd;
    h->flags = fi->flags;
    h->node->n_open++;
    node_refresh(h->node, fd);
    if (fi->flags & O_TRUNC) {
        node_truncate(h->node, 0);
    }
    fi->fh = (uint64_t)(uintptr_t)h;
    fi->direct_io = 1;
    return 0;
}

static int backing_flags(int flags)
{
    return (flags & ~(O_ACCMODE | O_TRUNC | O_APPEND | O_DIRECT | O_SYNC |
                      O_DSYNC | O_CREAT | O_EXCL)) |
           O_RDWR;
}

static int lfs_open(const char *path, struct fuse_file_info *fi)
{
    int fd;
    if (is_ctl(path)) {
        if (strcmp(path, CTL_DROP) != 0) {
            return -EISDIR;
        }
        fi->fh = CTL_FH;
        fi->direct_io = 1;
        return 0;
    }
    if (is_hidden(path)) {
        return -ENOENT;
    }
    fd = openat(g.root_fd, rel(path), backing_flags(fi->flags));
    if (fd < 0 && (errno == EACCES || errno == EROFS)) {
        fd = openat(g.root_fd, rel(path), fi->flags & ~(O_TRUNC | O_CREAT));
    }
    if (fd < 0) {
        return -errno;
    }
    return open_handle(fd, fi);
}

static int lfs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
    int fd, rv;
    if (is_ctl(path) || is_hidden(path)) {
        return -EPERM;
    }
    fd = openat(g.root_fd, rel(path),
                backing_flags(fi->flags) | O_CREAT | O_EXCL, mode);
    if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL)) {
        return lfs_open(path, fi);
    }
    if (fd < 0) {
        return -errno;
    }
    rv = open_handle(fd, fi);
    if (rv != 0) {
        (void)unlinkat(g.root_fd, rel(path), 0);
        return rv;
    }
    return g.is_strict ? journal_or_commit(J_CREATE, path, NULL, NULL, mode)
                       : 0;
}

static int lfs_read(const char *path, char *buf, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    struct handle *h;
    (void)path;
    if (fi->fh == CTL_FH) {
        return 0;
    }
    h = handle_of(fi);
    node_refresh(h->node, h->fd);
    return (int)node_read(h->node, h->fd, buf, size, off);
}

static int lfs_write(const char *path, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct handle *h;
    int rv;
    (void)path;
    if (fi->fh == CTL_FH) {
        drop_all();
        return (int)size;
    }
    h = handle_of(fi);
    node_refresh(h->node, h->fd);
    if (h->flags & O_APPEND) {
        off = h->node->size;
    }
    rv = node_write(h->node, buf, size, off);
    if (rv == 0 && (h->flags & (O_SYNC | O_DSYNC))) {
        rv = node_flush(h->node, h->fd, (h->flags & O_SYNC) != O_SYNC);
    }
    return rv != 0 ? rv : (int)size;
}

static int lfs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
    struct handle *h;
    (void)path;
    if (fi->fh == CTL_FH) {
        return 0;
    }
    h = handle_of(fi);
    node_refresh(h->node, h->fd);
    return node_flush(h->node, h->fd, datasync);
}

static int lfs_release(const char *path, struct fuse_file_info *fi)
{
    struct handle *h;
    (void)path;
    if (fi->fh == CTL_FH) {
        return 0;
    }
    h = handle_of(fi);
    close(h->fd);
    h->node->n_open--;
    if (h->node->floor == -1) { /* dropped while open: nothing to keep */
        h->node->floor = h->node->size;
    }
    node_maybe_free(h->node);
    free(h);
    return 0;
}

static int lfs_statfs(const char *path, struct statvfs *st)
{
    (void)path;
    return fstatvfs(g.root_fd, st) != 0 ? -errno : 0;
}

static const struct fuse_operations lfs_ops = {
    .init = lfs_init,
    .getattr = lfs_getattr,
    .readlink = lfs_readlink,
    .mknod = lfs_mknod,
    .mkdir = lfs_mkdir,
    .unlink = lfs_unlink,
    .rmdir = lfs_rmdir,
    .symlink = lfs_symlink,
    .rename = lfs_rename,
    .link = lfs_link,
    .chmod = lfs_chmod,
    .chown = lfs_chown,
    .truncate = lfs_truncate,
    .open = lfs_open,
    .read = lfs_read,
    .write = lfs_write,
    .statfs = lfs_statfs,
    .release = lfs_release,
    .fsync = lfs_fsync,
    .readdir = lfs_readdir,
    .fsyncdir = lfs_fsyncdir,
    .create = lfs_create,
    .utimens = lfs_utimens,
};

/* Empties BACKING/.lossyfs-trash, left over from an earlier mount (what is
 * in it was removed, durably or not: a new mount starts from a clean
 * power-on). */
static int trash_init(void)
{
    remove_tree(TRASH_NAME);
    if (mkdirat(g.root_fd, TRASH_NAME, 0700) != 0) {
        logf_("mkdir %s: %s", TRASH_NAME, strerror(errno));
        return -1;
    }
    return 0;
}

static void usage(void)
{
    (void)fprintf(stderr,
                  "usage: kappa-lossyfs [--meta=strict|immediate] BACKING "
                  "MOUNTPOINT [fuse options]\n"
                  "  write to MOUNTPOINT/.lossyfs/drop to lose every "
                  "un-fsynced write\n");
}

int main(int argc, char **argv)
{
    char *fargv[64];
    int fargc = 0, i = 1, rv;

    g.is_strict = 1;
    if (i < argc && strncmp(argv[i], "--meta=", 7) == 0) {
        if (strcmp(argv[i] + 7, "strict") == 0) {
            g.is_strict = 1;
        } else if (strcmp(argv[i] + 7, "immediate") == 0) {
            g.is_strict = 0;
        } else {
            usage();
            return 2;
        }
        i++;
    }
    if (argc - i < 2 || argc - i > 56) {
        usage();
        return 2;
    }
    if (realpath(argv[i], g.backing) == NULL) {
        (void)fprintf(stderr, "lossyfs: %s: %s\n", argv[i], strerror(errno));
        return 1;
    }
    g.root_fd = open(g.backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (g.root_fd < 0) {
        (void)fprintf(stderr, "lossyfs: open %s: %s\n", argv[i],
                      strerror(errno));
        return 1;
    }
    if (trash_init() != 0) {
        return 1;
    }
    fargv[fargc++] = argv[0];
    fargv[fargc++] = "-f";
    fargv[fargc++] = "-s";
    fargv[fargc++] = "-o";
    fargv[fargc++] = "fsname=lossyfs,subtype=lossyfs";
    for (i++; i < argc; i++) {
        fargv[fargc++] = argv[i];
    }
    fargv[fargc] = NULL;
    rv = fuse_main(fargc, fargv, &lfs_ops, NULL);
    close(g.root_fd);
    return rv;
}
