#!/usr/bin/env python3
"""Workers that update lists and a counter in one record by whole-record read-modify-write, in
lockstep (every worker reads, barrier, every worker writes, barrier), the way API workers handling
concurrent requests would. Nothing here knows about mergefs.

Each worker, each round: appends its own item to "items", adds an element {"id": ..., "qty": ...}
to the keyed list "lines", and adds (its number + 1) to the counter "hits".

Usage: lists.py RECORD WORKERS ROUNDS. Prints one JSON summary: {"errors": [...], "corrupt": bool}:
"corrupt" when the record stayed invalid JSON (a plain directory can keep a stale tail behind a
shorter body); the workers then stop.
"""

import json
import multiprocessing
import sys
import threading
import time
import traceback

BARRIER_TIMEOUT = 120


class Corrupt(Exception):
    pass


def read(path):
    """Reads the record, retrying a torn read (a plain directory shows a file being rewritten)."""
    for attempt in range(60):
        try:
            with open(path) as f:
                return json.load(f)
        except json.JSONDecodeError:
            time.sleep(0.01)
    raise Corrupt(path)


def worker(path, k, rounds, barrier, errors, corrupt):
    try:
        for r in range(rounds):
            barrier.wait(BARRIER_TIMEOUT)
            rec = read(path)
            rec["items"].append("w%d-%d" % (k, r))
            rec["lines"].append({"id": "w%d-%d" % (k, r), "qty": k + 1})
            rec["hits"] += k + 1
            barrier.wait(BARRIER_TIMEOUT)
            with open(path, "w") as f:
                json.dump(rec, f)
    except Corrupt:
        corrupt.set()
        barrier.abort()
    except threading.BrokenBarrierError:
        if not corrupt.is_set():
            errors.put("worker %d: %s" % (k, traceback.format_exc()))
    except Exception:
        errors.put("worker %d: %s" % (k, traceback.format_exc()))
        barrier.abort()


def main():
    path, workers, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with open(path, "w") as f:
        json.dump({"hits": 0, "items": [], "lines": []}, f)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(workers)
    errors = ctx.Queue()
    corrupt = ctx.Event()
    procs = [ctx.Process(target=worker, args=(path, k, rounds, barrier, errors, corrupt)) for k in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    out = []
    while not errors.empty():
        out.append(errors.get())
    print(json.dumps({"errors": out, "corrupt": corrupt.is_set()}))


if __name__ == "__main__":
    main()
