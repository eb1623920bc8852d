#!/usr/bin/env python3
"""The demo's API workers: N processes that each handle "requests" that increment the worker's own
counter in shared JSON records, the way the field report's workers do it -- read the whole file,
change one field, write the whole file back. Nothing here knows about mergefs.

Run for a fixed time, then compare every counter with the number of updates its worker believes it
made. Prints one JSON object: attempted, lost, torn reads, errors, corrupt records, throughput.
"""

import argparse
import json
import multiprocessing
import os
import random
import signal
import sys
import time


def handle_request(path, field):
    """One request, as legacy code does it. Returns how many torn reads it saw; raises ValueError
    if the record stays unreadable (the request fails, as it would with a 500)."""
    torn = 0
    while True:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        try:
            record = json.loads(text)
            break
        except ValueError:
            # A truncated or half-written file, or a stale tail behind a shorter body: what
            # readers of a plain directory see while others rewrite it.
            torn += 1
            if torn >= 3:
                raise ValueError("record stays unreadable") from None
            time.sleep(0.001)
    record[field] = record.get(field, 0) + 1
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)
    return torn


def worker(wid, paths, deadline, results):
    field = "worker%d" % wid
    rnd = random.Random(wid)
    made = {p: 0 for p in paths}
    attempted = torn = errors = 0
    while time.monotonic() < deadline:
        path = rnd.choice(paths)
        attempted += 1
        try:
            torn += handle_request(path, field)
            made[path] += 1
        except ValueError:
            torn += 3
            errors += 1
        except OSError:
            errors += 1  # e.g. close() failed with EIO: the worker knows this update did not happen
    results.put({"field": field, "made": made, "attempted": attempted, "torn": torn, "errors": errors})


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", required=True)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--records", type=int, default=2)
    p.add_argument("--seconds", type=float, default=5)
    args = p.parse_args()
    # Ctrl-C ends the demo quietly (the workers inherit this by fork).
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

    paths = [os.path.join(args.dir, "user%d.json" % i) for i in range(args.records)]
    for i, path in enumerate(paths):
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"id": i, "name": "Zoë", "plan": "pro", "tags": ["a", "b"]}, f)

    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    start = time.monotonic()
    deadline = start + args.seconds
    procs = [ctx.Process(target=worker, args=(w, paths, deadline, results)) for w in range(args.workers)]
    for proc in procs:
        proc.start()
    stats = [results.get(timeout=args.seconds + 120) for _ in procs]
    for proc in procs:
        proc.join(30)
    elapsed = time.monotonic() - start

    lost = corrupt = 0
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                final = json.load(f)
        except ValueError:
            corrupt += 1
            final = {}
        for s in stats:
            lost += max(0, s["made"][path] - final.get(s["field"], 0))
    made = sum(sum(s["made"].values()) for s in stats)
    json.dump({
        "attempted": sum(s["attempted"] for s in stats),
        "made": made,
        "lost": lost,
        "torn": sum(s["torn"] for s in stats),
        "errors": sum(s["errors"] for s in stats),
        "corrupt": corrupt,
        "seconds": round(elapsed, 2),
        "per_second": round(made / elapsed) if elapsed > 0 else 0,
    }, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
