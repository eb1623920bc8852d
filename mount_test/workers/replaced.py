#!/usr/bin/env python3
"""A record replaced by rename while a legacy worker holds it open, step by step.

  replaced.py DIR [REPLACER_DIR]

Creates DIR/rec.json = {"a": 0, "b": 0}. Worker 1 opens it 'r+' and reads; worker 2 (another
process) reads it, writes a temporary file with "a" changed and os.replace()s it over the record;
then worker 1 fstat()s, rewrites with "b" changed, truncates and closes; finally the record is read
again by path. With REPLACER_DIR (a second mount of the same backing directory) worker 2 works
there, so worker 1's kernel has no idea the name changed. On a plain directory worker 1's handle still refers to the replaced file, so its
write is lost. Prints {"errors": {step: "errno message"}, "final": text}.
"""

import json
import multiprocessing
import os
import sys


def replacer(path, done):
    # path is the record as seen from the replacer's directory.
    with open(path) as f:
        rec = json.load(f)
    rec["a"] = 1
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f)
    os.replace(tmp, path)
    done.set()


def main():
    d = sys.argv[1]
    path = os.path.join(d, "rec.json")
    replacer_path = os.path.join(sys.argv[2] if len(sys.argv) > 2 else d, "rec.json")
    with open(path, "w") as f:
        json.dump({"a": 0, "b": 0}, f)

    errors = {}

    def step(name, fn):
        try:
            return fn()
        except OSError as e:
            errors[name] = "%s %s" % (e.errno, e.strerror)
            return None

    f = step("open r+", lambda: open(path, "r+"))
    rec = json.loads(step("read", f.read)) if f else {"a": 0, "b": 0}
    # The path is looked up again right before the replace, so the kernel caches its dentry.
    step("stat before replace", lambda: os.stat(path))

    ctx = multiprocessing.get_context("fork")
    done = ctx.Event()
    p = ctx.Process(target=replacer, args=(replacer_path, done))
    p.start()
    p.join(60)
    if not done.is_set():
        errors["replacer"] = "exit code %s" % p.exitcode

    if f:
        step("fstat after replace", lambda: os.fstat(f.fileno()))
        rec["b"] = 1
        step("seek", lambda: f.seek(0))
        step("write", lambda: f.write(json.dumps(rec)))
        step("flush", f.flush)
        step("truncate", f.truncate)
        step("close", f.close)

    def reread():
        with open(path) as g:
            return g.read()

    final = step("open by path after replace", reread)
    json.dump({"errors": errors, "final": final}, sys.stdout)


if __name__ == "__main__":
    main()
