#!/usr/bin/python3
"""Test cases for kappa-lossyfs, run by test_lossyfs.sh against a mounted
filesystem: `lossyfs_cases.py strict|immediate MOUNTPOINT BACKING`.

Each case prepares files through the mount, checks that the live view is
right, then one drop ("power failure") happens and every case checks that
exactly what was made durable survived. Exit status 1 on any failure."""

import os
import sys

FAILURES = []


def check(cond, what):
    if cond:
        print("ok   " + what)
    else:
        print("FAIL " + what)
        FAILURES.append(what)


def write_file(path, data, flags=0, fsync=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop(mnt):
    with open(os.path.join(mnt, ".lossyfs", "drop"), "w") as f:
        f.write("drop\n")


class Cases:
    """Each case is a pair: prepare_X (before the drop, returns nothing) and
    verify_X (after it)."""

    def __init__(self, mnt, backing, strict):
        self.mnt = mnt
        self.backing = backing
        self.strict = strict
        self.held = {}

    def p(self, *names):
        return os.path.join(self.mnt, *names)

    # Durable names with durable contents, made before anything else.
    def setup(self):
        os.mkdir(self.p("d"))
        os.mkdir(self.p("emptydir"))
        for name, data in [("a", b""), ("b", b""), ("e", b"E" * 8000),
                           ("f", b"F" * 8000), ("g", b"a" * 10000),
                           ("u1", b"U1"), ("u2", b"U2"), ("r1", b"R1"),
                           ("s1", b"S1"), ("t1", b"T1"), ("t2", b"T2"),
                           ("h", b"H" * 100), ("app", b"0123"),
                           ("held", b"HELD")]:
            write_file(self.p(name), data, fsync=True)
        write_file(self.p("d", "x"), b"X" * 10, fsync=True)
        fsync_dir(self.p("d"))
        fsync_dir(self.mnt)

    def prepare(self):
        # Data written and never fsynced is lost.
        write_file(self.p("a"), b"A" * 10000)
        check(read_file(self.p("a")) == b"A" * 10000, "a: dirty data readable")
        check(os.stat(self.p("a")).st_size == 10000, "a: stat sees dirty size")
        # fsync covers what was written before it, not after.
        write_file(self.p("b"), b"X" * 5000, fsync=True)
        write_file(self.p("b"), b"Y" * 3000, flags=os.O_APPEND)
        check(read_file(self.p("b")) == b"X" * 5000 + b"Y" * 3000,
              "b: synced + dirty tail readable")
        # O_DSYNC writes are durable when write() returns.
        write_file(self.p("c"), b"C" * 7000, flags=os.O_DSYNC)
        write_file(self.p("c2"), b"c" * 100, flags=os.O_SYNC)
        fsync_dir(self.mnt)
        # A truncation is buffered like a write.
        os.truncate(self.p("e"), 100)
        check(os.stat(self.p("e")).st_size == 100, "e: truncated size seen")
        fd = os.open(self.p("f"), os.O_RDWR)
        os.ftruncate(fd, 100)
        os.fsync(fd)
        os.close(fd)
        # Overwrites in the middle, and a hole past the end.
        fd = os.open(self.p("g"), os.O_RDWR)
        os.pwrite(fd, b"b" * 100, 100)
        os.pwrite(fd, b"c" * 10, 150)
        os.close(fd)
        want = b"a" * 100 + b"b" * 50 + b"c" * 10 + b"b" * 40 + b"a" * 9800
        check(read_file(self.p("g")) == want, "g: overlapping writes merge")
        fd = os.open(self.p("h"), os.O_RDWR)
        os.pwrite(fd, b"Z", 4000)
        os.close(fd)
        got = read_file(self.p("h"))
        check(got == b"H" * 100 + b"\0" * 3900 + b"Z", "h: hole reads zeros")
        # Appends land at the logical end, not the backing file's end.
        write_file(self.p("app"), b"45", flags=os.O_APPEND)
        write_file(self.p("app"), b"67", flags=os.O_APPEND)
        check(read_file(self.p("app")) == b"01234567", "app: O_APPEND order")
        self.prepare_names()
        # A descriptor held open across the drop sees the surviving state.
        fd = os.open(self.p("held"), os.O_RDWR)
        os.pwrite(fd, b"XXXXXXXX", 0)
        self.held["fd"] = fd
        names = os.listdir(self.mnt)
        check(".lossyfs-trash" not in names and ".lossyfs" not in names,
              "root listing hides lossyfs's own entries")

    def prepare_names(self):
        # New file, data and directory fsynced: durable.
        write_file(self.p("d", "n2"), b"N2" * 100, fsync=True)
        fsync_dir(self.p("d"))
        # Rename and unlink, then the root is fsynced: durable.
        os.rename(self.p("s1"), self.p("s2"))
        os.unlink(self.p("u2"))
        check(not os.path.exists(self.p("u2")), "u2: unlinked name gone")
        fsync_dir(self.mnt)

    def verify_common(self):
        check(read_file(self.p("a")) == b"", "a: unsynced data lost")
        check(read_file(self.p("b")) == b"X" * 5000, "b: exactly the synced part")
        check(read_file(self.p("c")) == b"C" * 7000, "c: O_DSYNC data kept")
        check(read_file(self.p("c2")) == b"c" * 100, "c2: O_SYNC data kept")
        check(read_file(self.p("e")) == b"E" * 8000, "e: unsynced truncate lost")
        check(read_file(self.p("f")) == b"F" * 100, "f: synced truncate kept")
        check(read_file(self.p("g")) == b"a" * 10000, "g: overwrites lost")
        check(read_file(self.p("h")) == b"H" * 100, "h: extension lost")
        check(read_file(self.p("app")) == b"0123", "app: appends lost")
        check(read_file(self.p("d", "x")) == b"X" * 10, "d/x: durable file kept")
        check(read_file(self.p("d", "n2")) == b"N2" * 100,
              "d/n2: file with fsynced data and directory kept")
        fd = self.held.pop("fd")
        check(os.pread(fd, 100, 0) == b"HELD", "held fd sees surviving data")
        os.pwrite(fd, b"NEW!", 0)
        os.fsync(fd)
        os.close(fd)
        check(read_file(self.p("held")) == b"NEW!", "held fd works after drop")
        check(read_file(self.p("s2")) == b"S1" and
              not os.path.exists(self.p("s1")), "s2: fsynced rename kept")
        check(not os.path.exists(self.p("u2")), "u2: fsynced unlink kept")


def round_two(c):
    """Root-level changes after the last root fsync: these must be undone
    (strict) or kept (immediate) by the second drop."""
    p = c.p
    write_file(p("late"), b"LATE", fsync=True)
    os.rename(p("s2"), p("s3"))
    os.unlink(p("d", "x"))
    os.mkdir(p("late_dir"))
    write_file(p("c"), b"", flags=os.O_TRUNC)  # O_TRUNC is buffered
    check(read_file(p("c")) == b"", "c: O_TRUNC seen before drop")
    os.rename(p("t2"), p("d", "moved"))  # cross-directory
    fsync_dir(p("d"))  # only one parent of the rename: not enough
    drop(c.mnt)
    check(read_file(p("c")) == b"C" * 7000, "c: unsynced O_TRUNC lost")
    if c.strict:
        check(not os.path.exists(p("late")), "late: created, dir not fsynced: lost")
        check(read_file(p("s2")) == b"S1" and not os.path.exists(p("s3")),
              "s3: rename not fsynced: undone")
        check(not os.path.exists(p("late_dir")), "late_dir: mkdir undone")
        check(read_file(p("t2")) == b"T2" and
              not os.path.exists(p("d", "moved")),
              "cross-directory rename needs both parents fsynced")
    else:
        check(read_file(p("late")) == b"LATE", "late: immediate mode keeps name")
        check(read_file(p("s3")) == b"S1", "s3: immediate rename kept")
        check(read_file(p("d", "moved")) == b"T2", "moved: immediate rename kept")
    check(not os.path.exists(p("d", "x")), "d/x: unlink durable (d fsynced)")


def round_strict_unsynced(c):
    """Directory operations with no fsync of their parent, strict mode
    only: all of them are undone by the drop."""
    p = c.p
    for name in ("v1", "v2", "w", "r1"):
        write_file(p(name), name.upper().encode(), fsync=True)
    os.mkdir(p("vd"))
    fsync_dir(c.mnt)
    os.unlink(p("v1"))
    os.rename(p("v2"), p("w"))
    os.rename(p("r1"), p("r2"))
    os.rmdir(p("vd"))
    write_file(p("fresh"), b"FRESH", fsync=True)  # data synced, name not
    # A directory whose own entry is never fsynced, holding a file whose
    # data and directory entry are: the file goes with the directory.
    os.mkdir(p("newdir"))
    write_file(p("newdir", "f"), b"NF", fsync=True)
    fsync_dir(p("newdir"))
    live = sorted(n for n in os.listdir(c.mnt)
                  if n in ("v1", "v2", "w", "vd", "fresh", "r1", "r2",
                           "newdir"))
    check(live == ["fresh", "newdir", "r2", "w"], "live view before drop")
    check(read_file(p("w")) == b"V2", "w: replaced by rename")
    drop(c.mnt)
    check(read_file(p("v1")) == b"V1", "v1: unlink undone, data back")
    check(read_file(p("v2")) == b"V2" and read_file(p("w")) == b"W",
          "rename over an existing file undone")
    check(read_file(p("r1")) == b"R1" and not os.path.exists(p("r2")),
          "r1: rename undone")
    check(os.path.isdir(p("vd")), "vd: rmdir undone")
    check(not os.path.exists(p("fresh")), "fresh: new name lost")
    check(not os.path.exists(p("newdir")),
          "newdir: lost with its file (its own entry was never fsynced)")
    trash = os.path.join(c.backing, ".lossyfs-trash")
    check(os.listdir(trash) == [], "trash empty after drop")


def round_random(c, seed=4242, steps=400):
    """Random writes, truncations and fsyncs on one file against a model:
    the live view must match the model after every step, and after the
    drop the file must be exactly what was last fsynced."""
    import random
    rng = random.Random(seed)
    path = c.p("rand")
    write_file(path, b"", flags=os.O_TRUNC, fsync=True)
    fsync_dir(c.mnt)
    live, durable = bytearray(), b""
    fd = os.open(path, os.O_RDWR)
    ok = True
    for step in range(steps):
        r = rng.random()
        if r < 0.6:
            off = rng.randrange(0, 70000)
            data = bytes([rng.randrange(256)]) * rng.randrange(1, 9000)
            os.pwrite(fd, data, off)
            if off > len(live):
                live.extend(b"\0" * (off - len(live)))
            live[off:off + len(data)] = data
        elif r < 0.75:
            size = rng.randrange(0, 80000)
            os.ftruncate(fd, size)
            if size < len(live):
                del live[size:]
            else:
                live.extend(b"\0" * (size - len(live)))
        elif r < 0.85:
            os.fsync(fd)
            durable = bytes(live)
        got = os.pread(fd, 200000, 0)
        if got != bytes(live) or os.fstat(fd).st_size != len(live):
            ok = False
            print("random step %d (seed %d): live view differs" % (step, seed))
            break
    os.close(fd)
    check(ok, "random writes/truncates match the model (seed %d)" % seed)
    drop(c.mnt)
    check(read_file(path) == durable,
          "random: exactly the last fsynced state survives (%d bytes)"
          % len(durable))


def main():
    mode, mnt, backing = sys.argv[1], sys.argv[2], sys.argv[3]
    c = Cases(mnt, backing, mode == "strict")
    c.setup()
    c.prepare()
    drop(mnt)
    c.verify_common()
    round_two(c)
    if c.strict:
        round_strict_unsynced(c)
    round_random(c)
    if c.strict:
        trash = os.path.join(backing, ".lossyfs-trash")
        fsync_dir(mnt)
        fsync_dir(c.p("d"))
        os.unlink(c.p("v1"))
        check(len(os.listdir(trash)) == 1, "unlinked file waits in trash")
        fsync_dir(mnt)
        check(os.listdir(trash) == [], "trash empty after fsyncs")
    print("%d failure(s)" % len(FAILURES))
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
