#!/usr/bin/env python3
"""One process with two pool threads, T1 and T2, serving requests on one record, step by step:

  1. request B reads the record (version V0) on T1, and never writes;
  2. request C reads V0 on T2 and writes it back with "a" incremented (version C1);
  3. request A reads C1 on T2, increments "a", and its write lands on T1.

No other process writes. A write that fails is retried as a worker's error handling would: read
again (on T1) and write the increment again. Prints {"write": errno|null, "retry": errno|null,
"record": the record after} as JSON.
"""

import json
import queue
import sys
import threading


class PoolThread:
    """A thread that runs the calls given to it, one at a time, and returns their results."""

    def __init__(self):
        self.calls, self.results = queue.Queue(), queue.Queue()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            fn = self.calls.get()
            try:
                self.results.put((None, fn()))
            except BaseException as e:
                self.results.put((e, None))

    def run(self, fn):
        self.calls.put(fn)
        err, value = self.results.get()
        if err is not None:
            raise err
        return value


def main():
    path = sys.argv[1]

    def read():
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def write(obj):
        with open(path, "w") as f:
            json.dump(obj, f)

    t1, t2 = PoolThread(), PoolThread()
    t1.run(read)
    c = t2.run(read)
    c["a"] += 1
    t2.run(lambda: write(c))
    a = t2.run(read)
    a["a"] += 1
    result = {"write": None, "retry": None}
    try:
        t1.run(lambda: write(a))
    except OSError as e:
        result["write"] = e.errno
        again = t1.run(read)
        again["a"] += 1
        try:
            t1.run(lambda: write(again))
        except OSError as e:
            result["retry"] = e.errno
    result["record"] = read()
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
