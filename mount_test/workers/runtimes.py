#!/usr/bin/env python3
"""Python read-modify-write workers for the runtime tests (mount_test/runtimes_test.go, issue 10).

Each task of this process owns one field ("p<proc>t<task>") of the shared records and increments
it by reading the whole record and writing the whole record back, written the way API servers on
event loops and thread pools do. Nothing here knows about mergefs.

Drivers and patterns (--pattern):
  aiofiles   asyncio, --tasks coroutines; aiofiles.open/read and aiofiles.open('w')/write (every
             file operation runs on the loop's default thread pool)
  asleep     asyncio, --tasks coroutines; blocking open()/read, `await asyncio.sleep()`, blocking
             open('w')/write
  pool       --tasks request threads; each submits its read and its write to one
             ThreadPoolExecutor (--pool threads) as separate tasks, so they run on pool threads
  rw         --tasks threads; open()/read, open('w')/write
  vim        --tasks threads; open/read/close, then the way vim writes: open(O_WRONLY) without
             O_TRUNC, ftruncate(0), write, fsync, close
  cp         --tasks threads; `cp RECORD SCRATCH/x`, read x, edit, write x, `cp x RECORD` (real cp)
  interleave one thread serving two requests (fields t0 and t1) on one record: read A, read B,
             write B, write A

Lockstep (--mode lockstep): every task reads, all tasks of all processes meet at a barrier, every
task writes, barrier again; task g (proc*tasks+task) uses record (iteration+g) % records. The
barrier across processes goes through the test: this process prints "B" on stdout when all its
tasks arrived and waits for "G" on stdin. Free (--mode free): no barriers, random records.

--slow N: the first N tasks do a single request on record 0 that waits between its read and its
write: with the asyncio drivers until every other task of this process has finished; with the
thread drivers at a barrier the test releases when the other processes have finished.
--grow: every write also sets "grow" to a string whose length varies (the record's size changes).
--stagger-ms M: with the thread drivers, task g waits g*M ms between the barrier and its write.

Prints "R <json summary>" on stdout at the end. Exits 0 unless the driver itself failed.
"""

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

MAX_READ_ATTEMPTS = 60
SAME_INVALID_READS_IS_CORRUPT = 4


def record_name(i):
    return "r%d.json" % i


class BarrierBroken(Exception):
    pass


class Coordinator:
    """The cross-process barrier: one "B" line out, one "G" line in."""

    def __init__(self):
        self.lock = threading.Lock()

    def sync(self):
        with self.lock:
            sys.stdout.write("B\n")
            sys.stdout.flush()
            line = sys.stdin.readline()
            if line.strip() != "G":
                raise BarrierBroken("the test answered %r at the barrier" % line)


class Stats:
    def __init__(self):
        self.commits = {}  # record -> field -> successful writes
        self.attempts = 0
        self.torn = 0
        self.unreadable = 0
        self.oserrors = 0
        self.errors = []
        self.samples = []

    def commit(self, rec, field):
        f = self.commits.setdefault(record_name(rec), {})
        f[field] = f.get(field, 0) + 1

    def oserror(self, e, where):
        self.oserrors += 1
        if len(self.samples) < 5:
            self.samples.append("%s: %r" % (where, e))

    def merge(self, other):
        for rec, fields in other.commits.items():
            for f, n in fields.items():
                d = self.commits.setdefault(rec, {})
                d[f] = d.get(f, 0) + n
        for k in ("attempts", "torn", "unreadable", "oserrors"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.errors += other.errors
        self.samples += other.samples


def decode(text):
    obj = json.loads(text)
    if not isinstance(obj, dict) or "id" not in obj:
        raise ValueError("not a record: %r" % (text[:60],))
    return obj


class Reading:
    """Retries torn reads; a record that keeps decoding to the same bad bytes is corrupt."""

    def __init__(self, st):
        self.st = st
        self.last_bad, self.same_bad, self.attempt = None, 0, 0

    def bad(self, text):
        """Counts a torn read; False once the read should be given up."""
        self.st.torn += 1
        if text == self.last_bad:
            self.same_bad += 1
        else:
            self.last_bad, self.same_bad = text, 1
        self.attempt += 1
        if self.same_bad >= SAME_INVALID_READS_IS_CORRUPT or self.attempt >= MAX_READ_ATTEMPTS:
            self.st.unreadable += 1
            return False
        return True

    def failed(self, e):
        self.st.oserror(e, "read")
        self.attempt += 1
        if self.attempt >= MAX_READ_ATTEMPTS:
            self.st.unreadable += 1
            return False
        return True

    def pause(self):
        return 0.001 * min(self.attempt, 5)


def read_sync(reader, st):
    r = Reading(st)
    while True:
        try:
            text = reader()
        except OSError as e:
            if not r.failed(e):
                return None
            time.sleep(r.pause())
            continue
        try:
            return decode(text)
        except ValueError:
            if not r.bad(text):
                return None
            time.sleep(r.pause())


async def read_async(reader, st):
    r = Reading(st)
    while True:
        try:
            text = await reader()
        except OSError as e:
            if not r.failed(e):
                return None
            await asyncio.sleep(r.pause())
            continue
        try:
            return decode(text)
        except ValueError:
            if not r.bad(text):
                return None
            await asyncio.sleep(r.pause())


def read_open(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_open(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def write_vim(path, obj):
    data = json.dumps(obj).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def cp(src, dst):
    p = subprocess.run(["cp", src, dst], capture_output=True, text=True)
    if p.returncode != 0:
        raise OSError(0, "cp %s %s: exit %d: %s" % (src, dst, p.returncode, p.stderr.strip()))


class Task:
    def __init__(self, args, task, coord_barrier=None):
        self.args = args
        self.task = task
        self.g = args.proc * args.tasks + task
        self.field = "p%dt%d" % (args.proc, task)
        self.st = Stats()
        self.rnd = random.Random(args.seed * 7919 + self.g)
        self.slow = task < args.slow

    def iterations(self):
        return 1 if self.slow else self.args.iterations

    def record(self, it):
        if self.slow:
            return 0
        if self.args.mode == "lockstep":
            return (it + self.g) % self.args.records
        return self.rnd.randrange(self.args.records)

    def path(self, rec):
        return os.path.join(self.args.dir, record_name(rec))

    def bump(self, obj, it, field=None):
        field = field or self.field
        obj[field] = obj.get(field, 0) + 1
        if self.args.grow:
            obj["grow"] = "g" * ((it * 97 + self.g * 31) % 700)

    def write(self, writer, rec, obj, field=None):
        """Runs writer(); counts the commit if it returned normally."""
        self.st.attempts += 1
        try:
            writer()
        except OSError as e:
            self.st.oserror(e, "write %s" % self.args.pattern)
            return
        self.st.commit(rec, field or self.field)


# --- asyncio drivers -----------------------------------------------------------------------------


class AsyncBarrier:
    def __init__(self, n, coord, stdin_pool):
        self.n, self.coord, self.pool = n, coord, stdin_pool
        self.count, self.gen = 0, asyncio.get_running_loop().create_future()
        self.broken = False

    def abort(self):
        """Breaks the barrier: a task failed, and the others would wait for it forever."""
        self.broken = True
        if not self.gen.done():
            self.gen.set_exception(BarrierBroken("a task failed"))

    async def wait(self):
        if self.broken:
            raise BarrierBroken("a task failed")
        gen = self.gen
        self.count += 1
        if self.count == self.n:
            self.count = 0
            self.gen = asyncio.get_running_loop().create_future()
            try:
                await asyncio.get_running_loop().run_in_executor(self.pool, self.coord.sync)
            except BaseException as e:
                gen.set_exception(BarrierBroken(repr(e)))
                raise
            gen.set_result(None)
        else:
            await gen


async def run_async(args, coord):
    stdin_pool = ThreadPoolExecutor(max_workers=1)
    barrier = AsyncBarrier(args.tasks - args.slow, coord, stdin_pool) if args.mode == "lockstep" else None
    fast_left = [args.tasks - args.slow]
    fast_done = asyncio.Event()
    if fast_left[0] == 0:
        fast_done.set()
    if args.pattern == "aiofiles":
        import aiofiles

        async def aread(path):
            async with aiofiles.open(path, encoding="utf-8") as f:
                return await f.read()

        async def awrite(path, obj):
            async with aiofiles.open(path, "w") as f:
                await f.write(json.dumps(obj))
    else:
        async def aread(path):
            return read_open(path)

        async def awrite(path, obj):
            write_open(path, obj)

    async def run_task(t):
        try:
            for it in range(t.iterations()):
                rec = t.record(it)
                path = t.path(rec)
                obj = await read_async(lambda: aread(path), t.st)
                if args.pattern == "asleep":
                    await asyncio.sleep(t.rnd.uniform(0, args.sleep_ms / 1000))
                if t.slow:
                    await fast_done.wait()
                elif barrier:
                    await barrier.wait()
                if obj is not None:
                    t.bump(obj, it)
                    t.st.attempts += 1
                    try:
                        await awrite(path, obj)
                        t.st.commit(rec, t.field)
                    except OSError as e:
                        t.st.oserror(e, "write %s" % args.pattern)
                if barrier and not t.slow:
                    await barrier.wait()
        except Exception:
            t.st.errors.append(traceback.format_exc())
            if barrier:
                barrier.abort()
        finally:
            if not t.slow:
                fast_left[0] -= 1
                if fast_left[0] == 0:
                    fast_done.set()

    tasks = [Task(args, i) for i in range(args.tasks)]
    await asyncio.gather(*(run_task(t) for t in tasks))
    stdin_pool.shutdown()
    return tasks


# --- thread drivers ------------------------------------------------------------------------------


def run_threads(args, coord):
    pool = ThreadPoolExecutor(max_workers=args.pool or args.tasks) if args.pattern == "pool" else None
    n_fast = args.tasks - args.slow
    barrier = threading.Barrier(n_fast, action=coord.sync) if args.mode == "lockstep" and n_fast else None
    tasks = [Task(args, i) for i in range(args.tasks)]

    def on_pool(fn, *a):
        return pool.submit(fn, *a).result() if pool else fn(*a)

    def run_task(t):
        scratch = os.path.join(args.scratch, "p%dt%d.json" % (args.proc, t.task)) if args.scratch else None
        try:
            for it in range(t.iterations()):
                rec = t.record(it)
                path = t.path(rec)
                if args.pattern == "cp":
                    def reader():
                        cp(path, scratch)
                        return read_open(scratch)
                else:
                    def reader():
                        return read_open(path)
                obj = on_pool(read_sync, reader, t.st)
                if t.slow:
                    coord.sync()
                elif barrier:
                    barrier.wait()
                if obj is not None:
                    # Writers one after the other: each opens the record for writing after the
                    # ones before it committed (an editor saving after others changed the file).
                    time.sleep(args.stagger_ms / 1000 * t.g)
                    t.bump(obj, it)
                    if args.pattern == "vim":
                        writer = lambda: write_vim(path, obj)
                    elif args.pattern == "cp":
                        def writer():
                            write_open(scratch, obj)
                            cp(scratch, path)
                    else:
                        writer = lambda: write_open(path, obj)
                    on_pool(t.write, writer, rec, obj)
                if barrier and not t.slow:
                    barrier.wait()
        except threading.BrokenBarrierError:
            t.st.errors.append("barrier broken: " + traceback.format_exc())
        except Exception:
            t.st.errors.append(traceback.format_exc())
            if barrier:
                barrier.abort()

    threads = [threading.Thread(target=run_task, args=(t,)) for t in tasks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if pool:
        pool.shutdown()
    return tasks


def run_interleave(args, coord):
    """One thread serving two requests, A (task 0) and B (task 1), on one record."""
    a, b = Task(args, 0), Task(args, 1)
    try:
        for it in range(args.iterations):
            rec = a.record(it)
            path = a.path(rec)
            obj_a = read_sync(lambda: read_open(path), a.st)
            obj_b = read_sync(lambda: read_open(path), b.st)
            if args.mode == "lockstep":
                coord.sync()
            for t, obj in ((b, obj_b), (a, obj_a)):
                if obj is not None:
                    t.bump(obj, it)
                    t.write(lambda: write_open(path, obj), rec, obj)
            if args.mode == "lockstep":
                coord.sync()
    except Exception:
        a.st.errors.append(traceback.format_exc())
    return [a, b]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", required=True)
    p.add_argument("--pattern", required=True,
                   choices=("aiofiles", "asleep", "pool", "rw", "vim", "cp", "interleave"))
    p.add_argument("--mode", choices=("lockstep", "free"), default="lockstep")
    p.add_argument("--proc", type=int, default=0)
    p.add_argument("--tasks", type=int, default=1)
    p.add_argument("--records", type=int, default=2)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pool", type=int, default=0, help="pool threads (pattern pool; default --tasks)")
    p.add_argument("--sleep-ms", type=float, default=3.0, help="most an asleep request awaits")
    p.add_argument("--scratch", default="", help="directory for cp's copies (outside the mount)")
    p.add_argument("--stagger-ms", type=float, default=0,
                   help="thread drivers: task g waits g times this long before its write")
    p.add_argument("--slow", type=int, default=0)
    p.add_argument("--grow", action="store_true")
    args = p.parse_args()
    if args.pattern == "interleave":
        args.tasks = 2
    if args.pattern == "cp" and not args.scratch:
        p.error("--pattern cp needs --scratch")

    coord = Coordinator()
    start = time.monotonic()
    if args.pattern in ("aiofiles", "asleep"):
        tasks = asyncio.run(run_async(args, coord))
    elif args.pattern == "interleave":
        tasks = run_interleave(args, coord)
    else:
        tasks = run_threads(args, coord)
    total = Stats()
    for t in tasks:
        total.merge(t.st)
    summary = {
        "commits": total.commits, "attempts": total.attempts, "torn": total.torn,
        "unreadable": total.unreadable, "oserrors": total.oserrors,
        "errors": total.errors[:10], "samples": total.samples[:10],
        "elapsed": round(time.monotonic() - start, 3),
    }
    sys.stdout.write("R " + json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
