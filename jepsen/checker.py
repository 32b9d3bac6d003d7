#!/usr/bin/python3
"""Kappa's Jepsen-style checker for queue histories (standard library only).

    checker.py HISTORY.jsonl [--out DIR] [--dumps DIR] [--window SECONDS]
               [--allow TYPE,...] [--strict] [--examples N] [--quiet]

Reads a JSON-lines history (the schema is in jepsen/README.md and in
parse_history below), checks it for Jepsen's queue anomalies (the
definitions of jepsen/tests/kafka.clj) and for Kappa's stronger promises,
and writes DIR/results.json and DIR/timeline.svg (DIR defaults to the
history's directory). A human summary goes to stdout.

Exit status: 0 valid, 1 invalid (an anomaly outside the allowed set),
2 the input could not be read, 3 unknown (no ok operation at all, so
nothing was checked)."""

import argparse
import json
import math
import os
import sys
from collections import defaultdict

# Anomaly types. Jepsen's names first, in the order of the research note,
# then Kappa's promises.
JEPSEN_TYPES = [
    "inconsistent-offsets", "duplicate", "lost-write", "unseen", "G1a",
    "poll-skip", "nonmonotonic-poll", "int-poll-skip",
    "int-nonmonotonic-poll", "nonmonotonic-send", "int-nonmonotonic-send",
    "int-send-skip",
]
KAPPA_TYPES = [
    "acked-not-durable", "read-disappeared", "hwm-decreased", "lost-topic",
    "replica-divergence",
]
ALL_TYPES = JEPSEN_TYPES + KAPPA_TYPES
# Allowed by default, as in Jepsen's allowed-error-types: sends of one
# operation may be interleaved with other producers' records.
DEFAULT_ALLOWED = {"int-send-skip"}
# With subscribe (consumer groups), a rebalance may move a consumer.
SUBSCRIBE_ALLOWED = {"poll-skip", "nonmonotonic-poll"}

CLIENT_TYPES = ("invoke", "ok", "fail", "info")


class HistoryError(Exception):
    """The history is not in the documented format."""


# ---- parsing -------------------------------------------------------------

def key_str(k):
    """Keys are compared as strings: "topic/partition" by convention."""
    if isinstance(k, (list, dict)):
        raise HistoryError("a key must be a string or a number, not %r" % (k,))
    return str(k)


def parse_history(lines):
    """Parses JSON lines into op dicts. Every op has index (int, increasing
    in file order), time (int ns), process (int/str, or "nemesis"), type
    (invoke|ok|fail|info), f (str) and optionally value and other fields.
    Blank lines are ignored."""
    ops = []
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            op = json.loads(line)
        except ValueError as e:
            raise HistoryError("line %d: not JSON: %s" % (lineno, e))
        if not isinstance(op, dict):
            raise HistoryError("line %d: an op must be a JSON object" % lineno)
        for field in ("time", "process", "type", "f"):
            if field not in op:
                raise HistoryError("line %d: missing %r" % (lineno, field))
        if op["type"] not in CLIENT_TYPES:
            raise HistoryError("line %d: bad type %r" % (lineno, op["type"]))
        if not isinstance(op["time"], (int, float)):
            raise HistoryError("line %d: time must be a number" % lineno)
        op.setdefault("index", len(ops))
        op["_line"] = lineno
        ops.append(op)
    return ops


class Op:
    """An invocation paired with its completion. type is the completion's
    type; an invocation never completed is "info" (its outcome is unknown),
    as Jepsen treats it."""

    __slots__ = ("process", "f", "invoke", "complete", "type", "t0", "t1",
                 "value", "phase")

    def __init__(self, inv, comp):
        self.process = inv["process"]
        self.f = inv["f"]
        self.invoke = inv
        self.complete = comp
        self.type = comp["type"] if comp is not None else "info"
        self.t0 = inv["time"]
        self.t1 = comp["time"] if comp is not None else None
        src = comp if comp is not None and "value" in comp else inv
        self.value = src.get("value")
        self.phase = (comp or inv).get("phase", inv.get("phase"))

    def field(self, name, default=None):
        if self.complete is not None and name in self.complete:
            return self.complete[name]
        return self.invoke.get(name, default)

    def ref(self):
        """A short reference for examples."""
        c = self.complete if self.complete is not None else self.invoke
        return {"index": c.get("index"), "process": self.process, "f": self.f,
                "type": self.type, "time": c.get("time")}


def pair_ops(ops):
    """Pairs each invoke with the next completion of the same process.
    Completions without an invocation (e.g. a nemesis info op on its own)
    become ops of their own. Returns the list ordered by invocation."""
    pending = {}
    out = []
    for op in ops:
        p = op["process"]
        if isinstance(p, (list, dict)):
            p = json.dumps(p)
        if op["type"] == "invoke":
            if p in pending:
                # A process invokes again without completing: the first
                # outcome is unknown.
                out.append(Op(pending.pop(p), None))
            pending[p] = op
        elif p in pending:
            out.append(Op(pending.pop(p), op))
        else:
            out.append(Op(op, op))
    for inv in pending.values():
        out.append(Op(inv, None))
    out.sort(key=lambda o: (o.t0, o.invoke.get("index", 0)))
    return out


def send_mops(op):
    """The micro-ops of a send as (key, offset or None, value). Invocations
    are [["send", k, v], ...]; ok completions [["send", k, [offset, v]]]."""
    out = []
    for m in op.value or []:
        if not isinstance(m, list) or len(m) != 3 or m[0] != "send":
            raise HistoryError("op %s: bad send micro-op %r"
                               % (op.invoke.get("index"), m))
        k, x = key_str(m[1]), m[2]
        if isinstance(x, list) and len(x) == 2:
            out.append((k, x[0], x[1]))
        else:
            out.append((k, None, x))
    return out


def poll_results(op):
    """A poll's result as a list of (key, [(offset, value), ...]), in the
    order read. Accepts {k: [[o, v], ...]}, [[k, [[o, v], ...]], ...], and
    either wrapped in Jepsen's micro-op form [["poll", RESULT]]."""
    v = op.value
    if v is None:
        return []
    if isinstance(v, list) and v and isinstance(v[0], list) and v[0] and \
            v[0][0] == "poll":
        merged = []
        for m in v:
            if len(m) >= 2:
                merged.extend(_poll_map(op, m[1]))
        return merged
    return _poll_map(op, v)


def _poll_map(op, v):
    if isinstance(v, dict):
        items = list(v.items())
    elif isinstance(v, list):
        items = v
    else:
        raise HistoryError("op %s: bad poll value %r" % (op.invoke.get("index"), v))
    out = []
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise HistoryError("op %s: bad poll entry %r"
                               % (op.invoke.get("index"), item))
        k, recs = item
        pairs = []
        for r in recs or []:
            if not isinstance(r, list) or len(r) != 2:
                raise HistoryError("op %s: bad record %r"
                                   % (op.invoke.get("index"), r))
            pairs.append((r[0], r[1]))
        out.append((key_str(k), pairs))
    return out


def vkey(v):
    """A hashable identity for a value: ints and strings as themselves (so
    1 and "1" differ), anything else by its JSON text."""
    t = type(v)
    if t is int or t is str:
        return v
    return "\0json:" + json.dumps(v, sort_keys=True)


# ---- the analysis --------------------------------------------------------

class Report:
    def __init__(self, n_examples):
        self.n_examples = n_examples
        self.counts = defaultdict(int)
        self.examples = defaultdict(list)

    def add(self, kind, example):
        self.counts[kind] += 1
        if len(self.examples[kind]) < self.n_examples:
            self.examples[kind].append(example)


class VersionOrder:
    """Per key: offset -> values, and value -> offsets, from every poll
    (whatever its type) and every send whose offset is known."""

    def __init__(self):
        self.by_offset = defaultdict(lambda: defaultdict(set))
        self.by_value = defaultdict(lambda: defaultdict(set))
        self.raw = {}  # vkey -> original value, for examples
        self._index = {}

    def add(self, k, offset, value):
        if not isinstance(offset, int):
            return
        vk = vkey(value)
        self.raw[vk] = value
        self.by_offset[k][offset].add(vk)
        self.by_value[k][vk].add(offset)

    def index(self, k, offset):
        """Jepsen's dense index: the rank of OFFSET among the known offsets
        of K (offsets may be sparse; indices are not)."""
        if k not in self._index:
            self._index[k] = {o: i for i, o in
                              enumerate(sorted(self.by_offset[k]))}
        return self._index[k].get(offset)


def build(ops):
    """Collects sends, polls and the version order."""
    vo = VersionOrder()
    sends = []       # (op, key, offset, value) for every send micro-op
    polls = []       # (op, [(key, [(o, v)])]) for every poll with a result
    for op in ops:
        if op.f == "send":
            for k, o, v in send_mops(op):
                sends.append((op, k, o, v))
                if op.type == "ok":
                    vo.add(k, o, v)
        elif op.f == "poll" and op.complete is not None:
            res = poll_results(op)
            if res:
                polls.append((op, res))
                for k, recs in res:
                    for o, v in recs:
                        vo.add(k, o, v)
    return vo, sends, polls


def check_version_order(vo, rep):
    for k in sorted(vo.by_offset):
        for o in sorted(vo.by_offset[k]):
            vals = vo.by_offset[k][o]
            if len(vals) > 1:
                rep.add("inconsistent-offsets", {
                    "key": k, "offset": o,
                    "values": sorted((vo.raw[v] for v in vals),
                                     key=json.dumps)})
        for vk, offs in vo.by_value[k].items():
            if len(offs) > 1:
                rep.add("duplicate", {"key": k, "value": vo.raw[vk],
                                      "offsets": sorted(offs)})


def polled_values(polls, ok_only=True):
    seen = defaultdict(set)
    max_off = {}
    for op, res in polls:
        if ok_only and op.type != "ok":
            continue
        for k, recs in res:
            for o, v in recs:
                seen[k].add(vkey(v))
                if isinstance(o, int) and o > max_off.get(k, -1):
                    max_off[k] = o
    return seen, max_off


def check_lost_unseen(vo, sends, polls, rep):
    """lost-write: an acknowledged send at offset i is never polled although
    some poll read past i. unseen: acknowledged and never polled at all."""
    seen, max_off = polled_values(polls)
    unseen = defaultdict(list)
    for op, k, o, v in sends:
        if op.type != "ok" or vkey(v) in seen[k]:
            continue
        unseen[k].append(v)
        offs = vo.by_value[k].get(vkey(v), set())
        if o is None and offs:
            o = min(offs)
        if isinstance(o, int) and max_off.get(k, -1) > o:
            rep.add("lost-write", {"key": k, "value": v, "offset": o,
                                   "max_polled_offset": max_off[k],
                                   "send": op.ref()})
    for k in sorted(unseen):
        rep.counts["unseen"] += len(unseen[k])
        if len(rep.examples["unseen"]) < rep.n_examples:
            rep.examples["unseen"].append(
                {"key": k, "count": len(unseen[k]), "values": unseen[k][:20]})


def check_g1a(sends, polls, rep):
    failed = defaultdict(dict)
    for op, k, _, v in sends:
        if op.type == "fail":
            failed[k][vkey(v)] = op
    for op, res in polls:
        if op.type != "ok":
            continue
        for k, recs in res:
            for o, v in recs:
                if vkey(v) in failed[k]:
                    rep.add("G1a", {"key": k, "offset": o, "value": v,
                                    "poll": op.ref(),
                                    "failed_send": failed[k][vkey(v)].ref()})


def check_polls(vo, ops, rep):
    """Per consumer: successive polls must continue where the previous one
    ended (poll-skip, nonmonotonic-poll), and inside one poll the records
    of a key must be consecutive (int-poll-skip, int-nonmonotonic-poll).
    assign, subscribe and crash reset a consumer's positions."""
    last = defaultdict(dict)  # process -> key -> (index, offset, op)
    for op in sorted(ops, key=lambda o: (o.t1 if o.t1 is not None else o.t0)):
        if op.process == "nemesis":
            continue
        p = json.dumps(op.process)
        if op.f in ("assign", "subscribe", "crash"):
            last[p] = {}
            continue
        if op.f != "poll" or op.type != "ok":
            continue
        for k, recs in poll_results(op):
            idx = [(vo.index(k, o), o) for o, _ in recs if isinstance(o, int)]
            for (a, ao), (b, bo) in zip(idx, idx[1:]):
                if b <= a:
                    rep.add("int-nonmonotonic-poll", {
                        "key": k, "offsets": [ao, bo], "poll": op.ref()})
                elif b > a + 1:
                    rep.add("int-poll-skip", {
                        "key": k, "offsets": [ao, bo],
                        "skipped": b - a - 1, "poll": op.ref()})
            if not idx:
                continue
            if k in last[p]:
                a, ao, prev = last[p][k]
                b, bo = idx[0]
                if b <= a:
                    rep.add("nonmonotonic-poll", {
                        "key": k, "process": op.process,
                        "previous_end": ao, "start": bo,
                        "previous": prev.ref(), "poll": op.ref()})
                elif b > a + 1:
                    rep.add("poll-skip", {
                        "key": k, "process": op.process,
                        "previous_end": ao, "start": bo,
                        "skipped": b - a - 1,
                        "previous": prev.ref(), "poll": op.ref()})
            last[p][k] = (idx[-1][0], idx[-1][1], op)


def check_sends(vo, ops, rep):
    """Per producer: a later acknowledged send to a key lands after the
    earlier one (nonmonotonic-send); inside one send op, records to one key
    get increasing (int-nonmonotonic-send) and adjacent (int-send-skip)
    offsets."""
    last = defaultdict(dict)  # process -> key -> (index, offset, op)
    for op in sorted(ops, key=lambda o: (o.t1 if o.t1 is not None else o.t0)):
        if op.f != "send" or op.type != "ok":
            continue
        p = json.dumps(op.process)
        per_key = defaultdict(list)
        for k, o, _ in send_mops(op):
            if isinstance(o, int):
                per_key[k].append((vo.index(k, o), o))
        for k, idx in per_key.items():
            for (a, ao), (b, bo) in zip(idx, idx[1:]):
                if b <= a:
                    rep.add("int-nonmonotonic-send", {
                        "key": k, "offsets": [ao, bo], "send": op.ref()})
                elif b > a + 1:
                    rep.add("int-send-skip", {
                        "key": k, "offsets": [ao, bo],
                        "skipped": b - a - 1, "send": op.ref()})
            if k in last[p]:
                a, ao, prev = last[p][k]
                if idx[0][0] <= a:
                    rep.add("nonmonotonic-send", {
                        "key": k, "process": op.process,
                        "previous_offset": ao, "offset": idx[0][1],
                        "previous": prev.ref(), "send": op.ref()})
            last[p][k] = (max(idx)[0], max(idx)[1], op)


# ---- Kappa's promises ----------------------------------------------------

def final_reads(polls):
    """What the final phase read: key -> offset -> set of vkeys. None when
    the history has no final phase."""
    fin = None
    for op, res in polls:
        if op.phase != "final" or op.type != "ok":
            continue
        if fin is None:
            fin = defaultdict(lambda: defaultdict(set))
        for k, recs in res:
            for o, v in recs:
                fin[k][o].add(vkey(v))
    return fin


def has_final_phase(ops):
    return any(op.phase == "final" for op in ops)


def check_acked_durable(sends, fin, rep):
    """Every ok send at acks=all (the default) is in the final read at
    exactly its acknowledged offset, with the same value."""
    for op, k, o, v in sends:
        if op.type != "ok" or str(op.field("acks", "all")) != "all":
            continue
        if not isinstance(o, int):
            rep.add("acked-not-durable", {"key": k, "value": v,
                                          "reason": "no offset in the ack",
                                          "send": op.ref()})
            continue
        there = fin.get(k, {}).get(o, set())
        if vkey(v) in there:
            continue
        elsewhere = sorted(oo for oo, vs in fin.get(k, {}).items()
                           if vkey(v) in vs)
        reason = ("read at another offset" if elsewhere else
                  "another value at its offset" if there else
                  "missing from the final read")
        rep.add("acked-not-durable", {"key": k, "offset": o, "value": v,
                                      "reason": reason,
                                      "final_offsets": elsewhere,
                                      "send": op.ref()})


def check_read_disappeared(polls, fin, rep):
    """A record once polled is still at its offset in the final read."""
    reported = set()
    for op, res in polls:
        if op.type != "ok" or op.phase == "final":
            continue
        for k, recs in res:
            for o, v in recs:
                if not isinstance(o, int) or o in fin.get(k, {}):
                    continue
                if (k, o) in reported:
                    continue
                reported.add((k, o))
                rep.add("read-disappeared", {"key": k, "offset": o,
                                             "value": v, "poll": op.ref()})


def check_hwm(ops, rep):
    """The high watermark clients see never decreases: an op that began
    after another op ended reports, for each key, a hwm at least as high.
    ops carry "hwm": {key: offset} on their completion."""
    obs = defaultdict(list)  # key -> [(t0, t1, hwm, op)]
    for op in ops:
        h = op.field("hwm") if op.type == "ok" else None
        if not isinstance(h, dict):
            continue
        for k, w in h.items():
            if isinstance(w, int):
                obs[key_str(k)].append((op.t0, op.t1, w, op))
    for k in sorted(obs):
        by_end = sorted(obs[k], key=lambda x: x[1])
        by_start = sorted(obs[k], key=lambda x: x[0])
        best = None  # (hwm, op) highest among ops ended so far
        j = 0
        for t0, _, w, op in by_start:
            while j < len(by_end) and by_end[j][1] < t0:
                if best is None or by_end[j][2] > best[0]:
                    best = (by_end[j][2], by_end[j][3])
                j += 1
            if best is not None and w < best[0]:
                rep.add("hwm-decreased", {"key": k, "hwm": w,
                                          "earlier_hwm": best[0],
                                          "earlier": best[1].ref(),
                                          "op": op.ref()})


def check_topics(ops, rep):
    """An acknowledged create-topic survives: every later list-topics (ok,
    invoked after the create returned) names it, unless a delete-topic of it
    was invoked in between."""
    created = {}   # topic -> completion time of the ok create
    deleted = {}   # topic -> earliest delete-topic invocation time
    for op in ops:
        v = op.value if isinstance(op.value, dict) else {}
        name = v.get("topic") if isinstance(op.value, dict) else op.value
        if op.f == "create-topic" and op.type == "ok" and name is not None:
            created.setdefault(str(name), op)
        elif op.f == "delete-topic" and name is not None:
            deleted[str(name)] = min(deleted.get(str(name), op.t0), op.t0)
    for op in ops:
        if op.f != "list-topics" or op.type != "ok":
            continue
        listed = op.value
        names = set(map(str, listed.keys() if isinstance(listed, dict)
                        else (listed or [])))
        for name, c in created.items():
            if c.t1 is None or c.t1 >= op.t0 or name in names:
                continue
            if name in deleted and deleted[name] < op.t0:
                continue
            rep.add("lost-topic", {"topic": name, "create": c.ref(),
                                   "list": op.ref()})


# ---- replica dumps -------------------------------------------------------

def load_dump(path):
    """Reads one node's dump (the format `kappad dump` writes; see
    README.md): a header line {"kappa_dump": 1, "node": N}, then per
    partition a line {"partition": "topic/p", "start": S, "commit": C}
    followed by one [offset, token, ...] line per record in [S, C); token is
    the record's CRC-32C as 8 hex digits or its value, compared as given;
    further elements of a record line, and {"batch": ...} and
    {"error": ...} lines, are detail the comparison ignores."""
    node = os.path.basename(path)
    parts = {}
    cur = None
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                x = json.loads(line)
            except ValueError as e:
                raise HistoryError("%s:%d: not JSON: %s" % (path, lineno, e))
            if isinstance(x, dict) and "kappa_dump" in x:
                node = str(x.get("node", node))
            elif isinstance(x, dict) and ("batch" in x or "error" in x):
                continue  # per-batch detail and reported damage
            elif isinstance(x, dict) and "partition" in x:
                cur = {"start": int(x.get("start", 0)),
                       "commit": int(x["commit"]), "records": {}}
                parts[key_str(x["partition"])] = cur
            elif isinstance(x, list) and len(x) >= 2 and cur is not None:
                # [offset, token, ...]: later elements are detail
                cur["records"][int(x[0])] = vkey(x[1])
            else:
                raise HistoryError("%s:%d: unexpected line" % (path, lineno))
    return node, parts


def check_replicas(dump_dir, rep):
    """After healing, all replicas of a partition hold the same record at
    every offset up to the smallest commit offset among them, and no
    replica has a hole below its own commit offset. Returns per-partition
    stats."""
    dumps = {}
    for name in sorted(os.listdir(dump_dir)):
        path = os.path.join(dump_dir, name)
        if os.path.isfile(path) and (name.endswith(".jsonl") or
                                     name.endswith(".dump")):
            node, parts = load_dump(path)
            dumps[node] = parts
    stats = {}
    keys = sorted({k for parts in dumps.values() for k in parts})
    for k in keys:
        holders = {n: d[k] for n, d in dumps.items() if k in d}
        for n, p in holders.items():
            holes = [o for o in range(p["start"], p["commit"])
                     if o not in p["records"]]
            if holes:
                rep.add("replica-divergence", {
                    "partition": k, "node": n, "kind": "hole",
                    "first_missing": holes[0], "n_missing": len(holes)})
        lo = max(p["start"] for p in holders.values())
        hi = min(p["commit"] for p in holders.values())
        for o in range(lo, hi):
            tokens = {n: p["records"].get(o) for n, p in holders.items()}
            if len(set(tokens.values())) > 1:
                rep.add("replica-divergence", {
                    "partition": k, "offset": o, "kind": "mismatch",
                    "records": tokens})
        stats[k] = {"replicas": sorted(holders),
                    "commit": {n: p["commit"] for n, p in holders.items()},
                    "compared": [lo, hi]}
    return {"nodes": sorted(dumps), "partitions": stats}


# ---- stats, availability, latency ---------------------------------------

def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(math.ceil(q * len(sorted_vals))) - 1))
    return sorted_vals[i]


def latency_stats(ops):
    out = {}
    by_f = defaultdict(list)
    for op in ops:
        if op.process != "nemesis" and op.type == "ok" and op.t1 is not None:
            by_f[op.f].append((op.t1 - op.t0) / 1e6)
    for f, lat in sorted(by_f.items()):
        lat.sort()
        out[f] = {"count": len(lat),
                  "p50_ms": percentile(lat, 0.50),
                  "p90_ms": percentile(lat, 0.90),
                  "p99_ms": percentile(lat, 0.99),
                  "p999_ms": percentile(lat, 0.999),
                  "max_ms": lat[-1]}
    return out


def op_stats(ops):
    out = defaultdict(lambda: {"ok": 0, "fail": 0, "info": 0})
    for op in ops:
        if op.process != "nemesis":
            out[op.f][op.type] += 1
    return dict(sorted(out.items()))


def nemesis_windows(ops, t_end):
    """Fault windows from nemesis ops: "start-X" opens window X, "stop-X"
    closes it; an unclosed window lasts to the end of the history."""
    open_ = {}
    wins = []
    for op in ops:
        if op.process != "nemesis":
            continue
        t = op.t1 if op.t1 is not None else op.t0
        if op.f.startswith("start-"):
            name = op.f[len("start-"):]
            open_.setdefault(name, (t, op))
        elif op.f.startswith("stop-"):
            name = op.f[len("stop-"):]
            if name in open_:
                t0, first = open_.pop(name)
                wins.append({"fault": name, "start": t0, "stop": t,
                             "value": first.value})
    for name, (t0, first) in open_.items():
        wins.append({"fault": name, "start": t0, "stop": None,
                     "value": first.value})
    wins.sort(key=lambda w: w["start"])
    return wins


def availability(ops, wins, window_ns):
    client = [o for o in ops if o.process != "nemesis" and o.t1 is not None
              and o.f in ("send", "poll")]
    series = []
    if client:
        t_end = max(o.t1 for o in client)
        n = int(t_end // window_ns) + 1
        counts = [[0, 0] for _ in range(n)]
        for o in client:
            w = int(o.t1 // window_ns)
            counts[w][1] += 1
            counts[w][0] += o.type == "ok"
        series = [{"t_s": i * window_ns / 1e9, "ok": c[0], "total": c[1],
                   "ok_rate": (c[0] / c[1]) if c[1] else None}
                  for i, c in enumerate(counts)]
    recov = []
    oks = sorted((o for o in client if o.type == "ok"), key=lambda o: o.t0)
    for w in wins:
        if w["stop"] is None:
            continue
        after = {}
        for o in oks:
            if o.t0 >= w["stop"] and o.f not in after:
                after[o.f] = (o.t1 - w["stop"]) / 1e9
            if len(after) == 2:
                break
        recov.append({"fault": w["fault"], "stop_s": w["stop"] / 1e9,
                      "recover_s": max(after.values()) if after else None,
                      "by_f": after})
    total = len(client)
    ok = sum(1 for o in client if o.type == "ok")
    return {"window_s": window_ns / 1e9, "ok_rate": (ok / total) if total else
            None, "series": series, "recovery": recov}


# ---- SVG -----------------------------------------------------------------

def _esc(s):
    return (str(s).replace("&", "&amp;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def render_svg(ops, wins, window_ns):
    """Throughput (ok ops/s per window, per f) on top, latency of each op
    (log scale; ok/info/fail colours) below, fault windows shaded."""
    W, H, L, R = 960, 560, 70, 20
    panels = [(30, 220), (300, 220)]
    client = [o for o in ops if o.process != "nemesis" and o.t1 is not None]
    t_max = max([o.t1 for o in client] + [w["stop"] or 0 for w in wins] +
                [w["start"] for w in wins] + [1]) / 1e9
    def x(t_s):
        return L + (W - L - R) * t_s / t_max
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
           'font-family="sans-serif" font-size="11">' % (W, H),
           '<rect width="100%" height="100%" fill="white"/>']
    colours = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for top, h in panels:
        for w in wins:
            x0 = x(w["start"] / 1e9)
            x1 = x((w["stop"] if w["stop"] is not None else t_max * 1e9) / 1e9)
            out.append('<rect x="%.1f" y="%d" width="%.1f" height="%d" '
                       'fill="#f4a582" fill-opacity="0.35"><title>%s</title>'
                       '</rect>' % (x0, top, max(1.0, x1 - x0), h,
                                    _esc(w["fault"])))
        out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" '
                   'stroke="#333"/>' % (L, top, W - L - R, h))
    # Throughput.
    top, h = panels[0]
    n = int(t_max * 1e9 // window_ns) + 1
    by_f = defaultdict(lambda: [0] * n)
    for o in client:
        if o.type == "ok":
            by_f[o.f][min(n - 1, int(o.t1 // window_ns))] += 1
    ymax = max([max(v) for v in by_f.values()] + [1]) / (window_ns / 1e9)
    for i, (f, v) in enumerate(sorted(by_f.items())):
        pts = " ".join("%.1f,%.1f" % (x((j + 0.5) * window_ns / 1e9),
                                      top + h - h * (c / (window_ns / 1e9)) / ymax)
                       for j, c in enumerate(v))
        col = colours[i % len(colours)]
        out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" '
                   'points="%s"/>' % (col, pts))
        out.append('<text x="%d" y="%d" fill="%s">%s ok/s</text>'
                   % (L + 10 + 90 * i, top + 14, col, _esc(f)))
    out.append('<text x="5" y="%d">%.0f/s</text>' % (top + 10, ymax))
    out.append('<text x="5" y="%d">0</text>' % (top + h))
    out.append('<text x="%d" y="%d" font-size="13">throughput (ok ops/s, '
               '%.2g s windows); shaded: faults</text>'
               % (L, top - 8, window_ns / 1e9))
    # Latency, log scale from 0.1 ms to the max.
    top, h = panels[1]
    lats = [(o, max(1e-4, (o.t1 - o.t0) / 1e9)) for o in client]
    lmax = max([l for _, l in lats] + [1e-3])
    lo, hi = math.log10(1e-4), math.log10(lmax) + 0.1
    step = max(1, len(lats) // 6000)
    col = {"ok": "#1f77b4", "info": "#ff7f0e", "fail": "#d62728"}
    for o, l in lats[::step]:
        y = top + h - h * (math.log10(l) - lo) / (hi - lo)
        out.append('<circle cx="%.1f" cy="%.1f" r="1.4" fill="%s"/>'
                   % (x(o.t0 / 1e9), y, col[o.type]))
    for e in range(-4, int(math.ceil(hi)) + 1):
        if lo <= e <= hi:
            y = top + h - h * (e - lo) / (hi - lo)
            out.append('<text x="5" y="%.1f">%g ms</text>' % (y + 4, 10 ** e * 1e3))
    out.append('<text x="%d" y="%d" font-size="13">latency per op (log '
               'scale): blue ok, orange info, red fail</text>' % (L, top - 8))
    for i in range(6):
        t = t_max * i / 5
        out.append('<text x="%.1f" y="%d">%.1f s</text>'
                   % (x(t) - 10, panels[1][0] + panels[1][1] + 16, t))
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---- the whole check -----------------------------------------------------

def check(raw_ops, dump_dir=None, window_s=1.0, allowed=None, strict=False,
          n_examples=8):
    """Checks a parsed history; returns the results dict."""
    ops = pair_ops(raw_ops)
    rep = Report(n_examples)
    vo, sends, polls = build(ops)
    check_version_order(vo, rep)
    check_lost_unseen(vo, sends, polls, rep)
    check_g1a(sends, polls, rep)
    check_polls(vo, ops, rep)
    check_sends(vo, ops, rep)
    check_hwm(ops, rep)
    check_topics(ops, rep)
    not_checked = []
    fin = final_reads(polls)
    if fin is not None:
        check_acked_durable(sends, fin, rep)
        check_read_disappeared(polls, fin, rep)
    else:
        not_checked += ["acked-not-durable", "read-disappeared"]
        if has_final_phase(ops):
            # A final phase that read nothing at all: acknowledged sends
            # cannot have survived it.
            check_acked_durable(sends, {}, rep)
            check_read_disappeared(polls, {}, rep)
            not_checked = []
    replicas = None
    if dump_dir is not None:
        replicas = check_replicas(dump_dir, rep)
    else:
        not_checked.append("replica-divergence")

    if allowed is None:
        allowed = set() if strict else set(DEFAULT_ALLOWED)
        if not strict and any(o.f == "subscribe" for o in ops):
            allowed |= SUBSCRIBE_ALLOWED
    found = sorted((t for t in rep.counts if rep.counts[t] > 0),
                   key=ALL_TYPES.index)
    bad = [t for t in found if t not in allowed]
    n_ok = sum(1 for o in ops if o.process != "nemesis" and o.type == "ok")
    verdict = "invalid" if bad else ("valid" if n_ok else "unknown")
    t_end = max([o.t1 or o.t0 for o in ops] + [0])
    wins = nemesis_windows(ops, t_end)
    window_ns = int(window_s * 1e9)
    return {
        "valid": verdict == "valid" if verdict != "unknown" else "unknown",
        "verdict": verdict,
        "anomaly_types": bad,
        "allowed_types_found": [t for t in found if t in allowed],
        "anomalies": {t: {"count": rep.counts[t], "examples": rep.examples[t]}
                      for t in found},
        "not_checked": not_checked,
        "stats": op_stats(ops),
        "latency": latency_stats(ops),
        "availability": availability(ops, wins, window_ns),
        "faults": [{"fault": w["fault"], "start_s": w["start"] / 1e9,
                    "stop_s": None if w["stop"] is None else w["stop"] / 1e9}
                   for w in wins],
        "replicas": replicas,
        "_ops": ops, "_wins": wins, "_window_ns": window_ns,
    }


def summary(res):
    lines = ["verdict: %s" % res["verdict"].upper()]
    for t, a in res["anomalies"].items():
        tag = "" if t in res["anomaly_types"] else " (allowed)"
        lines.append("  %-22s %6d%s" % (t, a["count"], tag))
        for ex in a["examples"][:2]:
            lines.append("      e.g. " + json.dumps(ex, sort_keys=True)[:200])
    if res["not_checked"]:
        lines.append("not checked (no final phase / no dumps): " +
                     ", ".join(res["not_checked"]))
    lines.append("ops:")
    for f, s in res["stats"].items():
        lines.append("  %-14s ok %6d  info %5d  fail %5d"
                     % (f, s["ok"], s["info"], s["fail"]))
    for f, s in res["latency"].items():
        lines.append("  latency %-10s p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms"
                     % (f, s["p50_ms"], s["p90_ms"], s["p99_ms"], s["max_ms"]))
    av = res["availability"]
    if av["ok_rate"] is not None:
        lines.append("availability: %.1f%% of sends/polls ok" %
                     (100 * av["ok_rate"]))
    for r in av["recovery"]:
        lines.append("  after %s stopped at %.1f s: recovered in %s" % (
            r["fault"], r["stop_s"],
            "never" if r["recover_s"] is None else "%.2f s" % r["recover_s"]))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("history")
    ap.add_argument("--out", help="directory for results.json and "
                    "timeline.svg (default: the history's directory)")
    ap.add_argument("--dumps", help="directory of per-node dumps")
    ap.add_argument("--window", type=float, default=1.0,
                    help="availability/throughput window in seconds")
    ap.add_argument("--allow", default=None,
                    help="comma-separated anomaly types that do not make "
                    "the history invalid (replaces the defaults)")
    ap.add_argument("--strict", action="store_true",
                    help="allow nothing (not even int-send-skip)")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    try:
        with open(a.history) as f:
            raw = parse_history(f)
        allowed = None
        if a.allow is not None:
            allowed = {t for t in a.allow.split(",") if t}
            unknown = allowed - set(ALL_TYPES)
            if unknown:
                raise HistoryError("unknown anomaly types: %s" %
                                   ", ".join(sorted(unknown)))
        res = check(raw, a.dumps, a.window, allowed, a.strict, a.examples)
    except (OSError, HistoryError) as e:
        print("checker: %s" % e, file=sys.stderr)
        return 2
    out = a.out or os.path.dirname(os.path.abspath(a.history))
    os.makedirs(out, exist_ok=True)
    svg = render_svg(res["_ops"], res["_wins"], res["_window_ns"])
    public = {k: v for k, v in res.items() if not k.startswith("_")}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(public, f, indent=1, sort_keys=True, default=str)
        f.write("\n")
    with open(os.path.join(out, "timeline.svg"), "w") as f:
        f.write(svg)
    if not a.quiet:
        print(summary(res))
        print("wrote %s and %s" % (os.path.join(out, "results.json"),
                                   os.path.join(out, "timeline.svg")))
    return {"valid": 0, "invalid": 1, "unknown": 3}[res["verdict"]]


if __name__ == "__main__":
    sys.exit(main())
