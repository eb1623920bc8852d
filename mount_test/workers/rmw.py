#!/usr/bin/env python3
"""Legacy read-modify-write workers, written the way the field report's API workers are.

Each worker increments its own counter field ("w3", or "counters.w3" with --nested) in shared JSON
records by reading the whole record and writing the whole record back, with one of the write
patterns below. Nothing here knows about mergefs: this is the unmodified-style client code.

Lockstep mode puts a barrier between every read and every write (all workers read, barrier, all
write, barrier), so on a plain directory every write collides and updates are lost
deterministically. Free mode runs without barriers.

Prints one JSON summary on stdout. Exit status 0 unless the driver itself failed (losses are
reported, not judged: the Go test decides what they mean).
"""

import argparse
import json
import multiprocessing
import os
import pathlib
import queue
import random
import sys
import tempfile
import threading
import time
import traceback

PATTERNS = ("rw", "rplus", "replace", "mkstemp", "pathlib", "fsync")

# A torn read is retried; a record that keeps decoding to the same invalid bytes is corrupt for
# good (a plain directory can be left with a stale tail behind a shorter body).
MAX_READ_ATTEMPTS = 60
SAME_INVALID_READS_IS_CORRUPT = 4
BARRIER_TIMEOUT = 120


def record_name(i):
    return "r%d.json" % i


def initial_record(i, workers, size, nested):
    counters = {"w%d" % w: 0 for w in range(workers)}
    # Non-ASCII text written unescaped by whoever created the record; Python workers rewrite it
    # escaped ("\u00eb"), which must count as unchanged.
    rec = {"id": i, "name": "Zoë Ünal", "score": 1.5, "tags": ["a", "b"]}
    if nested:
        rec["counters"] = counters
    else:
        rec.update(counters)
    rec["pad"] = ""
    overhead = len(json.dumps(rec, ensure_ascii=False).encode())
    rec["pad"] = "x" * max(0, size - overhead)
    return rec


def init_records(d, n, workers, size, nested):
    os.makedirs(d, exist_ok=True)
    for i in range(n):
        with open(os.path.join(d, record_name(i)), "w", encoding="utf-8") as f:
            json.dump(initial_record(i, workers, size, nested), f, ensure_ascii=False)


class Stats:
    def __init__(self, wid, n):
        self.wid = wid
        self.commits = [0] * n  # successful writes per record: the expected counter value
        self.attempts = 0
        self.torn = 0
        self.torn_empty = 0
        self.unreadable = 0
        self.oserrors = 0
        self.errnos = {}
        self.gave_up = 0
        self.retries = 0
        self.barrier_broken = 0
        self.errors = []  # exceptions that ended the worker: a bug in the test, not a finding
        self.oserror_samples = []

    def oserror(self, e, where):
        self.oserrors += 1
        key = str(e.errno)
        self.errnos[key] = self.errnos.get(key, 0) + 1
        if len(self.oserror_samples) < 5:
            self.oserror_samples.append("%s: %r" % (where, e))

    def as_dict(self):
        return dict(self.__dict__)


# --- reads: each returns (obj, ctx); ctx is what the matching write needs -----------------------


def read_open(path):
    with open(path, encoding="utf-8") as f:
        return f.read(), None


def read_pathlib(path):
    return pathlib.Path(path).read_text(encoding="utf-8"), None


def read_rplus(path):
    f = open(path, "r+", encoding="utf-8")
    try:
        return f.read(), f
    except BaseException:
        f.close()
        raise


READERS = {
    "rw": read_open,
    "rplus": read_rplus,
    "replace": read_open,
    "mkstemp": read_open,
    "pathlib": read_pathlib,
    "fsync": read_open,
}


def decode(text):
    obj = json.loads(text)
    if not isinstance(obj, dict) or "id" not in obj:
        raise ValueError("not a record: %r" % (text[:60],))
    return obj


def read_record(path, pattern, st):
    """Reads until the record decodes, counting torn reads. Returns (obj, ctx) or (None, None)."""
    last_bad, same_bad = None, 0
    for attempt in range(MAX_READ_ATTEMPTS):
        ctx = None
        try:
            text, ctx = READERS[pattern](path)
        except OSError as e:
            st.oserror(e, "read")
            time.sleep(0.002)
            continue
        try:
            return decode(text), ctx
        except ValueError:
            if ctx is not None:
                ctx.close()
            st.torn += 1
            if text == "":
                st.torn_empty += 1
            if text == last_bad:
                same_bad += 1
                if same_bad >= SAME_INVALID_READS_IS_CORRUPT:
                    break
            else:
                last_bad, same_bad = text, 1
            time.sleep(0.001 * min(attempt + 1, 5))
    st.unreadable += 1
    return None, None


# --- writes: each returns normally on success and raises OSError on failure ---------------------


def write_rw(path, obj, ctx):
    with open(path, "w") as f:
        json.dump(obj, f)


def write_rplus(path, obj, ctx):
    f = ctx
    try:
        f.seek(0)
        json.dump(obj, f)
        f.truncate()
    except BaseException:
        try:
            f.close()
        except OSError:
            pass
        raise
    f.close()


def write_replace(path, obj, ctx):
    tmp = "%s.%d.%d.tmp" % (path, os.getpid(), threading.get_ident())
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_mkstemp(path, obj, ctx):
    d, base = os.path.split(path)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + base + ".", suffix=".tmp")
    try:
        data = json.dumps(obj).encode()
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_pathlib(path, obj, ctx):
    pathlib.Path(path).write_text(json.dumps(obj))


def write_fsync(path, obj, ctx):
    with open(path, "w") as f:
        f.write(json.dumps(obj))
        f.flush()
        os.fsync(f.fileno())


WRITERS = {
    "rw": write_rw,
    "rplus": write_rplus,
    "replace": write_replace,
    "mkstemp": write_mkstemp,
    "pathlib": write_pathlib,
    "fsync": write_fsync,
}


def bump(obj, name, nested, shared_field):
    counters = obj.setdefault("counters", {}) if nested else obj
    counters[name] = counters.get(name, 0) + 1
    if shared_field:
        # Every worker changes this key to its own value: a genuine conflict between writers.
        obj["last"] = name


def worker_loop(args, wid, barrier, results):
    st = Stats(wid, args.records)
    name = "w%d" % wid
    d = args.dirs[wid % len(args.dirs)]
    rnd = random.Random(args.seed * 1000 + wid)
    try:
        for it in range(args.iterations):
            rec = it % args.records if args.mode == "lockstep" else rnd.randrange(args.records)
            pattern = args.pattern if args.pattern != "mix" else rnd.choice(PATTERNS)
            path = os.path.join(d, record_name(rec))

            obj, ctx = read_record(path, pattern, st)
            if args.mode == "lockstep" and not wait(barrier, st):
                break
            ok = obj is not None and attempt_write(args, st, path, pattern, obj, ctx, name, rec)
            # Retries after a failed commit (--retry): the worker's own error handling re-reads
            # and tries again, without barriers.
            tries = 0
            while not ok and obj is not None and args.retry and tries < args.max_retries:
                tries += 1
                st.retries += 1
                time.sleep(rnd.random() * 0.003)
                obj, ctx = read_record(path, pattern, st)
                ok = obj is not None and attempt_write(args, st, path, pattern, obj, ctx, name, rec)
            if not ok and obj is not None:
                st.gave_up += 1
            if args.mode == "lockstep" and not wait(barrier, st):
                break
    except Exception:
        st.errors.append(traceback.format_exc())
    results.put(st.as_dict())


def attempt_write(args, st, path, pattern, obj, ctx, name, rec):
    bump(obj, name, args.nested, args.shared_field)
    st.attempts += 1
    try:
        WRITERS[pattern](path, obj, ctx)
    except OSError as e:
        st.oserror(e, "write " + pattern)
        return False
    st.commits[rec] += 1
    return True


def wait(barrier, st):
    try:
        barrier.wait(BARRIER_TIMEOUT)
        return True
    except threading.BrokenBarrierError:
        st.barrier_broken += 1
        return False


# --- pollers: read records in a loop during the storm and classify what they see ----------------


def poller_loop(dirs, n, stop, results, seed):
    rnd = random.Random(seed)
    c = {"reads": 0, "ok": 0, "empty": 0, "partial": 0, "invalid": 0, "oserrors": 0, "samples": []}
    while not stop.is_set():
        path = os.path.join(rnd.choice(dirs), record_name(rnd.randrange(n)))
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            c["oserrors"] += 1
            if len(c["samples"]) < 3:
                c["samples"].append("oserror %r" % e)
            continue
        c["reads"] += 1
        kind = classify(data)
        c[kind] += 1
        if kind != "ok" and c[kind] == 1:
            c["samples"].append("%s len=%d head=%r tail=%r" % (kind, len(data), data[:40], data[-40:]))
    results.put(c)


def classify(data):
    if not data:
        return "empty"
    try:
        decode(data.decode("utf-8"))
        return "ok"
    except json.JSONDecodeError as e:
        # "Extra data": a complete document followed by a stale tail; anything else means the
        # document stops early (a write in progress).
        return "invalid" if e.msg == "Extra data" else "partial"
    except ValueError:
        return "invalid"


# --- driver --------------------------------------------------------------------------------------


def final_state(args):
    d = args.dirs[0]
    out, corrupt = {}, []
    for i in range(args.records):
        name = record_name(i)
        try:
            with open(os.path.join(d, name), "rb") as f:
                obj = decode(f.read().decode("utf-8"))
        except (OSError, ValueError) as e:
            corrupt.append("%s: %r" % (name, e))
            out[name] = {}
            continue
        counters = obj.get("counters", {}) if args.nested else obj
        out[name] = {"w%d" % w: counters.get("w%d" % w, 0) for w in range(args.workers)}
    return out, corrupt


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True, help="records directory; comma-separated for several mounts")
    p.add_argument("--records", type=int, default=2)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--pattern", choices=PATTERNS + ("mix",), default="rw")
    p.add_argument("--mode", choices=("lockstep", "free"), default="lockstep")
    p.add_argument("--unit", choices=("process", "thread"), default="process")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--nested", action="store_true")
    p.add_argument("--shared-field", action="store_true", help="every write also sets \"last\"")
    p.add_argument("--retry", action="store_true", help="retry a failed write after re-reading")
    p.add_argument("--max-retries", type=int, default=200)
    p.add_argument("--pollers", type=int, default=0)
    p.add_argument("--init", action="store_true", help="create the records first (through the first dir)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    args.dirs = args.dir.split(",")

    if args.init:
        init_records(args.dirs[0], args.records, args.workers, args.size, args.nested)

    ctx = multiprocessing.get_context("fork")
    if args.unit == "process":
        barrier, results, make = ctx.Barrier(args.workers), ctx.Queue(), ctx.Process
    else:
        barrier, results, make = threading.Barrier(args.workers), queue.Queue(), threading.Thread

    stop, poll_results, pollers = ctx.Event(), ctx.Queue(), []
    for i in range(args.pollers):
        pp = ctx.Process(target=poller_loop, args=(args.dirs, args.records, stop, poll_results, 7 + i))
        pp.start()
        pollers.append(pp)

    start = time.monotonic()
    workers = [make(target=worker_loop, args=(args, w, barrier, results)) for w in range(args.workers)]
    for w in workers:
        w.start()
    stats = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join(30)
    elapsed = time.monotonic() - start

    stop.set()
    poll = {"reads": 0, "ok": 0, "empty": 0, "partial": 0, "invalid": 0, "oserrors": 0, "samples": []}
    for _ in pollers:
        c = poll_results.get(timeout=60)
        for k in poll:
            poll[k] += c[k]
    for pp in pollers:
        pp.join(30)

    stats.sort(key=lambda s: s["wid"])
    final, corrupt = final_state(args)
    expected, lost, extra = {}, 0, 0
    for i in range(args.records):
        name = record_name(i)
        expected[name] = {"w%d" % s["wid"]: s["commits"][i] for s in stats}
        for w, exp in expected[name].items():
            got = final[name].get(w, 0)
            lost += max(0, exp - got)
            extra += max(0, got - exp)

    errnos = {}
    for s in stats:
        for k, v in s["errnos"].items():
            errnos[k] = errnos.get(k, 0) + v

    def total(key):
        return sum(s[key] for s in stats)

    summary = {
        "pattern": args.pattern, "mode": args.mode, "unit": args.unit, "workers": args.workers,
        "records": args.records, "iterations": args.iterations, "size": args.size,
        "nested": args.nested, "dirs": args.dirs,
        "attempts": total("attempts"),
        "commits": sum(sum(s["commits"]) for s in stats),
        "lost": lost, "extra": extra,
        "torn_reads": total("torn"), "torn_empty": total("torn_empty"),
        "unreadable": total("unreadable"), "oserrors": total("oserrors"), "errnos": errnos,
        "retries": total("retries"), "gave_up": total("gave_up"),
        "barrier_broken": total("barrier_broken"),
        "worker_errors": [e for s in stats for e in s["errors"]][:10],
        "oserror_samples": [e for s in stats for e in s["oserror_samples"]][:10],
        "corrupt_final": corrupt,
        "expected": expected, "final": final,
        "pollers": poll,
        "elapsed": round(elapsed, 3),
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
