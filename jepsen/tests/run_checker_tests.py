#!/usr/bin/python3
"""Tests for jepsen/checker.py: one synthetic history per anomaly type,
asserting that exactly the expected types are reported, clean histories
(timeouts, crashes, retries, subscribe, sparse offsets, faults) that must
pass, and edge cases. Standard library unittest; run directly or via
`ctest -R unit.jepsen_checker`."""

import io
import json
import os
import shutil
import sys
import tempfile
import unittest
from xml.etree import ElementTree
from contextlib import redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.dont_write_bytecode = True  # keep the source tree clean

import checker  # noqa: E402

MS = 1000000
K = "t/0"


class H:
    """Builds a history. Each helper adds an invocation and its completion
    (unless type is None: never completed) one millisecond apart, in order,
    unless concurrent=True asks for an overlap with the previous op."""

    def __init__(self):
        self.ops = []
        self.t = 0

    def _add(self, process, type_, f, value, **extra):
        op = {"index": len(self.ops), "time": self.t, "process": process,
              "type": type_, "f": f}
        if value is not None:
            op["value"] = value
        op.update(extra)
        self.ops.append(op)
        self.t += MS
        return op

    def op(self, process, f, inv_value, type_, value, **extra):
        phase = extra.pop("phase", None)
        kw = {"phase": phase} if phase else {}
        self._add(process, "invoke", f, inv_value, **kw)
        if type_ is not None:
            kw.update(extra)
            self._add(process, type_, f, value, **kw)
        return self

    def send(self, p, records, type_="ok", key=K, **extra):
        """records: [(offset, value)]; offset None for an unknown offset."""
        inv = [["send", key, v] for _, v in records]
        if type_ == "ok":
            val = [["send", key, [o, v] if o is not None else v]
                   for o, v in records]
        else:
            val = inv
        return self.op(p, "send", inv, type_, val, **extra)

    def poll(self, p, records, type_="ok", key=K, **extra):
        val = {key: [[o, v] for o, v in records]} if type_ == "ok" else None
        return self.op(p, "poll", [["poll"]], type_, val, **extra)

    def assign(self, p, keys=(K,), **extra):
        return self.op(p, "assign", list(keys), "ok", list(keys), **extra)

    def crash(self, p):
        return self.op(p, "crash", None, "info", None)

    def nemesis(self, f, value=None):
        self._add("nemesis", "invoke", f, value)
        self._add("nemesis", "info", f, value)
        return self

    def final(self, p, records, key=K):
        self.assign(p, [key], phase="final")
        return self.poll(p, records, key=key, phase="final")

    def check(self, **kw):
        return checker.check(self.ops, **kw)

    def lines(self):
        return [json.dumps(o) for o in self.ops]


def clean_base(final=True):
    """Producer 0 sends 1..6 at offsets 0..5; consumer 1 reads them in two
    polls; a final read sees all of them."""
    h = H()
    for i in range(6):
        h.send(0, [(i, i + 1)])
    h.assign(1)
    h.poll(1, [(0, 1), (1, 2), (2, 3)])
    h.poll(1, [(3, 4), (4, 5), (5, 6)])
    if final:
        h.final(2, [(i, i + 1) for i in range(6)])
    return h


class Base(unittest.TestCase):
    def assertTypes(self, res, expected, verdict=None):
        self.assertEqual(sorted(res["anomalies"]), sorted(expected),
                         json.dumps(res["anomalies"], default=str)[:2000])
        if verdict is None:
            verdict = "invalid" if expected else "valid"
        self.assertEqual(res["verdict"], verdict)


class JepsenAnomalies(Base):
    """Each history shows one anomaly (plus, where noted, the ones its
    definition implies), without a final phase unless stated."""

    def test_lost_write(self):
        # Value 3 was acknowledged at offset 2; consumers saw offsets 0, 1
        # and 3 but never value 3. A lost write is by definition also
        # unseen.
        h = H()
        for i in range(4):
            h.send(0, [(i, i + 1)])
        h.assign(1).poll(1, [(0, 1), (1, 2)])
        h.assign(2).poll(2, [(3, 4)])
        res = h.check()
        self.assertTypes(res, ["lost-write", "unseen"])
        ex = res["anomalies"]["lost-write"]["examples"][0]
        self.assertEqual((ex["key"], ex["offset"], ex["value"]), (K, 2, 3))
        self.assertEqual(res["anomalies"]["unseen"]["count"], 1)

    def test_duplicate(self):
        h = H().send(0, [(0, 1)]).send(0, [(1, 2)])
        h.assign(1).poll(1, [(0, 1), (1, 2), (2, 1)])
        res = h.check()
        self.assertTypes(res, ["duplicate"])
        self.assertEqual(res["anomalies"]["duplicate"]["examples"][0]
                         ["offsets"], [0, 2])

    def test_inconsistent_offsets(self):
        # Two consumers disagree on offset 0; the send of 2 timed out.
        h = H().send(0, [(0, 1)]).send(0, [(None, 2)], type_="info")
        h.assign(1).poll(1, [(0, 1)])
        h.assign(2).poll(2, [(0, 2)])
        res = h.check()
        self.assertTypes(res, ["inconsistent-offsets"])
        self.assertEqual(res["anomalies"]["inconsistent-offsets"]["examples"]
                         [0]["values"], [1, 2])

    def test_unseen(self):
        h = H().send(0, [(0, 1)]).send(0, [(1, 2)]).send(0, [(2, 3)])
        h.assign(1).poll(1, [(0, 1), (1, 2)])
        res = h.check()
        self.assertTypes(res, ["unseen"])
        self.assertEqual(res["anomalies"]["unseen"]["examples"][0]["values"],
                         [3])

    def test_poll_skip(self):
        h = H()
        for i in range(4):
            h.send(0, [(i, i + 1)])
        h.assign(1).poll(1, [(0, 1), (1, 2)]).poll(1, [(3, 4)])
        h.assign(2).poll(2, [(2, 3)])
        res = h.check()
        self.assertTypes(res, ["poll-skip"])
        ex = res["anomalies"]["poll-skip"]["examples"][0]
        self.assertEqual((ex["previous_end"], ex["start"], ex["skipped"]),
                         (1, 3, 1))

    def test_poll_skip_allowed_with_subscribe(self):
        h = H()
        for i in range(4):
            h.send(0, [(i, i + 1)])
        h.op(1, "subscribe", [K], "ok", [K])
        h.poll(1, [(0, 1), (1, 2)]).poll(1, [(3, 4)])
        h.assign(2).poll(2, [(2, 3)])
        res = h.check()
        self.assertTypes(res, ["poll-skip"], verdict="valid")
        self.assertEqual(res["allowed_types_found"], ["poll-skip"])

    def test_nonmonotonic_poll(self):
        h = H()
        for i in range(3):
            h.send(0, [(i, i + 1)])
        h.assign(1).poll(1, [(0, 1), (1, 2)]).poll(1, [(1, 2), (2, 3)])
        res = h.check()
        self.assertTypes(res, ["nonmonotonic-poll"])

    def test_int_poll_skip(self):
        h = H()
        for i in range(3):
            h.send(0, [(i, i + 1)])
        h.assign(1).poll(1, [(0, 1), (2, 3)])
        h.assign(2).poll(2, [(1, 2)])
        res = h.check()
        self.assertTypes(res, ["int-poll-skip"])

    def test_int_nonmonotonic_poll(self):
        h = H().send(0, [(0, 1)]).send(0, [(1, 2)])
        h.assign(1).poll(1, [(1, 2), (0, 1)])
        res = h.check()
        self.assertTypes(res, ["int-nonmonotonic-poll"])

    def test_nonmonotonic_send(self):
        # Producer 0's second send landed before its first.
        h = H().send(0, [(1, 1)]).send(0, [(0, 2)])
        h.assign(1).poll(1, [(0, 2), (1, 1)])
        res = h.check()
        self.assertTypes(res, ["nonmonotonic-send"])

    def test_int_nonmonotonic_send(self):
        h = H().send(0, [(1, 1), (0, 2)])
        h.assign(1).poll(1, [(0, 2), (1, 1)])
        res = h.check()
        self.assertTypes(res, ["int-nonmonotonic-send"])

    def test_int_send_skip_allowed_by_default(self):
        # Producer 1's record landed between the two records of one send.
        h = H()
        h.send(0, [(0, 1), (2, 2)]).send(1, [(1, 3)])
        h.assign(2).poll(2, [(0, 1), (1, 3), (2, 2)])
        res = h.check()
        self.assertTypes(res, ["int-send-skip"], verdict="valid")
        res = h.check(strict=True)
        self.assertTypes(res, ["int-send-skip"], verdict="invalid")

    def test_g1a(self):
        h = H().send(0, [(0, 1)]).send(0, [(None, 2)], type_="fail")
        h.assign(1).poll(1, [(0, 1), (1, 2)])
        res = h.check()
        self.assertTypes(res, ["G1a"])


class KappaAnomalies(Base):
    def test_acked_not_durable(self):
        # Value 3 acknowledged at offset 2 (acks=all); the final read ends
        # at offset 1. Never read, so also unseen.
        h = H()
        for i in range(3):
            h.send(0, [(i, i + 1)])
        h.final(1, [(0, 1), (1, 2)])
        res = h.check()
        self.assertTypes(res, ["acked-not-durable", "unseen"])
        ex = res["anomalies"]["acked-not-durable"]["examples"][0]
        self.assertEqual((ex["offset"], ex["value"], ex["reason"]),
                         (2, 3, "missing from the final read"))

    def test_acked_not_durable_ignores_acks_1(self):
        h = H()
        for i in range(2):
            h.send(0, [(i, i + 1)])
        h.send(0, [(2, 3)], acks="1")
        h.final(1, [(0, 1), (1, 2)])
        res = h.check()
        self.assertTypes(res, ["unseen"])

    def test_acked_not_durable_wrong_offset(self):
        # The ack said offset 1 but the log has the value at offset 2 (and
        # nothing else claims offset 1... except the ack itself): Jepsen
        # sees a duplicate; Kappa also says the ack was wrong.
        h = H().send(0, [(0, 1)]).send(0, [(1, 2)])
        h.final(1, [(0, 1), (2, 2)])
        res = h.check()
        self.assertIn("acked-not-durable", res["anomalies"])
        ex = res["anomalies"]["acked-not-durable"]["examples"][0]
        self.assertEqual(ex["reason"], "read at another offset")

    def test_read_disappeared(self):
        # Value 3 (its send timed out) was read at offset 2 during the run;
        # the final read has no offset 2.
        h = H().send(0, [(0, 1)]).send(0, [(1, 2)])
        h.send(0, [(None, 3)], type_="info")
        h.assign(1).poll(1, [(0, 1), (1, 2), (2, 3)])
        h.final(2, [(0, 1), (1, 2)])
        res = h.check()
        self.assertTypes(res, ["read-disappeared"])

    def test_final_phase_that_read_nothing(self):
        h = H().send(0, [(0, 1)])
        h.assign(1, phase="final").poll(1, [], phase="final", type_="info")
        res = h.check()
        self.assertTypes(res, ["acked-not-durable", "unseen"])

    def test_hwm_decreased(self):
        h = clean_base()
        h.poll(3, [], hwm={K: 6})
        h.poll(4, [], hwm={K: 4})
        res = h.check()
        self.assertTypes(res, ["hwm-decreased"])
        ex = res["anomalies"]["hwm-decreased"]["examples"][0]
        self.assertEqual((ex["hwm"], ex["earlier_hwm"]), (4, 6))

    def test_hwm_concurrent_ops_may_disagree(self):
        # Two overlapping polls: neither ended before the other began.
        h = clean_base()
        h._add(3, "invoke", "poll", [["poll"]])
        h._add(4, "invoke", "poll", [["poll"]])
        h._add(3, "ok", "poll", {K: []}, hwm={K: 6})
        h._add(4, "ok", "poll", {K: []}, hwm={K: 4})
        h.poll(5, [], hwm={K: 6})
        res = h.check()
        self.assertTypes(res, [])

    def test_lost_topic(self):
        h = clean_base()
        h.op(3, "create-topic", {"topic": "u", "partitions": 3}, "ok",
             {"topic": "u", "partitions": 3})
        h.op(3, "list-topics", None, "ok", {"t": 1}, phase="final")
        res = h.check()
        self.assertTypes(res, ["lost-topic"])

    def test_topics_clean(self):
        h = clean_base()
        h.op(3, "create-topic", {"topic": "u", "partitions": 3}, "ok",
             {"topic": "u", "partitions": 3})
        h.op(3, "create-topic", {"topic": "v", "partitions": 1}, "info",
             None)  # unknown outcome: may or may not exist
        h.op(3, "create-topic", {"topic": "w", "partitions": 1}, "ok",
             {"topic": "w", "partitions": 1})
        h.op(3, "delete-topic", {"topic": "w"}, "ok", {"topic": "w"})
        h.op(3, "list-topics", None, "ok", ["t", "u"])
        self.assertTypes(h.check(), [])


def write_dump(d, node, parts):
    with open(os.path.join(d, node + ".jsonl"), "w") as f:
        f.write(json.dumps({"kappa_dump": 1, "node": node}) + "\n")
        for key, start, commit, recs in parts:
            f.write(json.dumps({"partition": key, "start": start,
                                "commit": commit}) + "\n")
            for o, tok in recs:
                f.write(json.dumps([o, tok]) + "\n")


class Replicas(Base):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kappa-checker-test.")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def recs(self, n, bad=None):
        return [(o, "%08x" % (o * 7919 if o != bad else 1)) for o in range(n)]

    def test_identical_replicas_pass(self):
        # n3 lags (commit 4 < 6): compared up to 4 only.
        write_dump(self.dir, "n1", [(K, 0, 6, self.recs(6))])
        write_dump(self.dir, "n2", [(K, 0, 6, self.recs(6))])
        write_dump(self.dir, "n3", [(K, 0, 4, self.recs(4))])
        res = clean_base().check(dump_dir=self.dir)
        self.assertTypes(res, [])
        self.assertEqual(res["replicas"]["partitions"][K]["compared"], [0, 4])

    def test_mismatch(self):
        write_dump(self.dir, "n1", [(K, 0, 6, self.recs(6))])
        write_dump(self.dir, "n2", [(K, 0, 6, self.recs(6, bad=3))])
        res = clean_base().check(dump_dir=self.dir)
        self.assertTypes(res, ["replica-divergence"])
        ex = res["anomalies"]["replica-divergence"]["examples"][0]
        self.assertEqual((ex["kind"], ex["offset"]), ("mismatch", 3))

    def test_hole(self):
        recs = [r for r in self.recs(6) if r[0] != 2]
        write_dump(self.dir, "n1", [(K, 0, 6, self.recs(6))])
        write_dump(self.dir, "n2", [(K, 0, 6, recs)])
        res = clean_base().check(dump_dir=self.dir)
        self.assertTypes(res, ["replica-divergence"])
        kinds = {e["kind"] for e in
                 res["anomalies"]["replica-divergence"]["examples"]}
        self.assertEqual(kinds, {"hole", "mismatch"})


class CleanHistories(Base):
    def test_clean_with_final_phase(self):
        res = clean_base().check()
        self.assertTypes(res, [])
        self.assertEqual(res["not_checked"], ["replica-divergence"])

    def test_clean_without_final_phase(self):
        res = clean_base(final=False).check()
        self.assertTypes(res, [])
        self.assertIn("acked-not-durable", res["not_checked"])

    def test_timeouts_and_unknown_outcomes(self):
        h = H()
        h.send(0, [(0, 1)])
        h.send(0, [(None, 2)], type_="info")   # timed out, did happen
        h.send(3, [(None, 3)], type_="info")   # timed out, never happened
        h.send(4, [(None, 4)], type_=None)     # never completed
        h.send(0, [(None, 5)], type_="fail")   # definitely not applied
        h.send(0, [(2, 6)])
        h.assign(1).poll(1, [(0, 1), (1, 2)])
        h.poll(1, [], type_="info")            # poll timed out
        h.poll(1, [(2, 6)])
        h.final(2, [(0, 1), (1, 2), (2, 6)])
        self.assertTypes(h.check(), [])

    def test_crashes_reset_consumer_position(self):
        h = clean_base(final=False)
        h.crash(1)
        h.assign(1).poll(1, [(0, 1), (1, 2)])  # starts over: fine
        h.crash(0)
        h.send(0, [(6, 7)])
        h.poll(1, [(2, 3), (3, 4), (4, 5), (5, 6), (6, 7)])
        h.final(5, [(i, i + 1) for i in range(7)])
        self.assertTypes(h.check(), [])

    def test_retry_after_timeout_with_a_new_process(self):
        # Jepsen-style: after an info, the client is replaced by a fresh
        # process id, which sends a new unique value.
        h = H()
        h.send(0, [(0, 1)])
        h.send(0, [(None, 2)], type_="info")
        h.send(10, [(2, 3)])                  # process 10 replaces 0
        h.assign(1).poll(1, [(0, 1), (1, 2), (2, 3)])
        h.final(2, [(0, 1), (1, 2), (2, 3)])
        self.assertTypes(h.check(), [])

    def test_sparse_offsets(self):
        # Offsets with gaps (e.g. control records): indices are dense.
        h = H().send(0, [(0, 1)]).send(0, [(2, 2)]).send(0, [(5, 3)])
        h.assign(1).poll(1, [(0, 1), (2, 2)]).poll(1, [(5, 3)])
        h.final(2, [(0, 1), (2, 2), (5, 3)])
        self.assertTypes(h.check(), [])

    def test_many_keys_and_batches(self):
        h = H()
        h.send(0, [(0, 1), (1, 2)], key="a/0")
        h.send(0, [(0, 3)], key="a/1")
        h.op(0, "send", [["send", "a/0", 4], ["send", "a/1", 5]], "ok",
             [["send", "a/0", [2, 4]], ["send", "a/1", [1, 5]]])
        h.assign(1, ["a/0", "a/1"])
        h.op(1, "poll", [["poll"]], "ok",
             [["poll", [["a/0", [[0, 1], [1, 2], [2, 4]]],
                        ["a/1", [[0, 3], [1, 5]]]]]])
        self.assertTypes(h.check(), [])

    def test_faults_availability_and_recovery(self):
        h = H()
        h.assign(1)
        off = 0
        for i in range(40):
            if i == 10:
                h.nemesis("start-partition", {"isolated": ["n1"]})
            if 10 <= i < 20:
                h.send(0, [(None, 1000 + i)], type_="info")
                continue
            if i == 20:
                h.nemesis("stop-partition")
            h.send(0, [(off, i)])
            h.poll(1, [(off, i)])
            off += 1
        res = h.check(window_s=0.01)
        self.assertTypes(res, [])
        self.assertEqual(len(res["faults"]), 1)
        rec = res["availability"]["recovery"][0]
        self.assertEqual(rec["fault"], "partition")
        self.assertGreater(rec["recover_s"], 0)
        self.assertLess(res["availability"]["ok_rate"], 1.0)
        self.assertEqual(res["latency"]["send"]["count"], 30)
        svg = checker.render_svg(res["_ops"], res["_wins"], res["_window_ns"])
        root = ElementTree.fromstring(svg)  # well-formed XML
        self.assertTrue(root.tag.endswith("svg"))
        self.assertIn("partition", svg)


class EdgeCases(Base):
    def test_empty_history(self):
        res = checker.check([])
        self.assertTypes(res, [], verdict="unknown")

    def test_only_failures(self):
        h = H()
        for i in range(5):
            h.send(0, [(None, i)], type_="fail")
            h.poll(1, [], type_="fail")
        self.assertTypes(h.check(), [], verdict="unknown")

    def test_only_info(self):
        h = H()
        for i in range(5):
            h.send(0, [(None, i)], type_="info")
        self.assertTypes(h.check(), [], verdict="unknown")

    def test_bad_lines(self):
        for text in ["{", "[1]", '{"time":0,"process":0,"type":"weird","f":"x"}',
                     '{"process":0,"type":"ok","f":"x"}']:
            with self.assertRaises(checker.HistoryError):
                checker.parse_history([text])

    def test_bad_send_value(self):
        h = H()
        h.op(0, "send", [["oops"]], "ok", [["oops"]])
        with self.assertRaises(checker.HistoryError):
            h.check()


class CommandLine(Base):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="kappa-checker-test.")

    def tearDown(self):
        shutil.rmtree(self.dir)

    def run_main(self, h, *args):
        path = os.path.join(self.dir, "history.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(h.lines()) + "\n")
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = checker.main([path, "--quiet"] + list(args))
        return rc

    def test_valid_exit_0_and_files(self):
        self.assertEqual(self.run_main(clean_base()), 0)
        with open(os.path.join(self.dir, "results.json")) as f:
            res = json.load(f)
        self.assertEqual(res["verdict"], "valid")
        self.assertTrue(res["valid"])
        self.assertIn("p99_ms", res["latency"]["send"])
        self.assertTrue(os.path.getsize(os.path.join(self.dir, "timeline.svg")))

    def test_invalid_exit_1(self):
        h = clean_base(final=False)
        h.poll(1, [(5, 6)])  # nonmonotonic
        self.assertEqual(self.run_main(h), 1)
        with open(os.path.join(self.dir, "results.json")) as f:
            res = json.load(f)
        self.assertEqual(res["anomaly_types"], ["nonmonotonic-poll"])

    def test_allow_flag(self):
        h = clean_base(final=False)
        h.poll(1, [(5, 6)])
        self.assertEqual(self.run_main(h, "--allow", "nonmonotonic-poll"), 0)

    def test_unknown_exit_3_and_unreadable_exit_2(self):
        self.assertEqual(self.run_main(H()), 3)
        path = os.path.join(self.dir, "bad.jsonl")
        with open(path, "w") as f:
            f.write("not json\n")
        err = io.StringIO()
        with redirect_stdout(io.StringIO()):
            sys.stderr, old = err, sys.stderr
            try:
                rc = checker.main([path])
            finally:
                sys.stderr = old
        self.assertEqual(rc, 2)

    def test_human_summary(self):
        h = clean_base()
        h.nemesis("start-kill").nemesis("stop-kill")
        h.send(0, [(6, 7)]).poll(1, [(6, 7)])
        path = os.path.join(self.dir, "history.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(h.lines()) + "\n")
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = checker.main([path])
        out = buf.getvalue()
        self.assertEqual(rc, 1)  # value 7 missing from the final read
        self.assertIn("verdict: INVALID", out)
        self.assertIn("acked-not-durable", out)
        self.assertIn("after kill stopped", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
