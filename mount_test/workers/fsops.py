#!/usr/bin/env python3
"""Single file operations for the end-to-end tests, run as a separate client process.

  fsops.py mkdir DIR                         create DIR (and parents)
  fsops.py ls DIR                            print the sorted directory listing as JSON
  fsops.py cat PATH                          copy the file's bytes to stdout
  fsops.py write PATH DATAFILE [--mode w|r+|x] [--fsync]
        write DATAFILE's bytes the way a legacy worker does; print which step failed and how, as
        JSON: {"open": errno|null, "write": ..., "fsync": ..., "close": ...}
  fsops.py fork-child PATH DATAFILE --how fork-exit|exec-cloexec|exec-inherit
        open PATH 'w', write DATAFILE's bytes, then let a child drop the inherited descriptor
        without writing (a forked child exits; a child execs with the descriptor close-on-exec;
        a child execs a program that inherits it and exits), print "written", wait for a line on
        stdin, close, and print {"close": errno|null}
  fsops.py half-write PATH DATAFILE [--mode w|r+]
        open, write DATAFILE's bytes (meant to be half a record) and flush them to the kernel,
        print "ready", then sleep until killed
  fsops.py probe PATH
        print what a reader finds at PATH as JSON: {"exists": os.path.exists, "listed": whether the
        parent directory lists it, "stat": errno|null, "read": errno|null, "data": text|null}
  fsops.py try-write PATH TEXT [--json] [--umask OCTAL]
        open PATH 'w' and write TEXT (with --json: json.dump(json.loads(TEXT))), then close; print
        {"step": "open"|"write"|"close"|null, "errno": errno|null} for the first step that failed
  fsops.py write-wait PATH TEXT
        open PATH 'w', json.dump(json.loads(TEXT)) and flush it to the kernel, print "written",
        wait for a line on stdin, close, and print {"close": errno|null}
"""

import argparse
import json
import os
import sys
import time


def errno_of(fn):
    try:
        fn()
        return None
    except OSError as e:
        return e.errno


def cmd_mkdir(a):
    os.makedirs(a.path, exist_ok=True)


def cmd_ls(a):
    json.dump(sorted(os.listdir(a.path)), sys.stdout)


def cmd_cat(a):
    with open(a.path, "rb") as f:
        sys.stdout.buffer.write(f.read())


def cmd_write(a):
    with open(a.datafile, "rb") as f:
        data = f.read()
    result = {"open": None, "write": None, "fsync": None, "close": None}
    try:
        f = open(a.path, a.mode + "b", buffering=0)
    except OSError as e:
        result["open"] = e.errno
        json.dump(result, sys.stdout)
        return

    def write_all():
        view = memoryview(data)
        while view:
            view = view[f.write(view):]
        if a.mode == "r+":
            f.truncate()

    result["write"] = errno_of(write_all)
    if a.fsync:
        result["fsync"] = errno_of(lambda: os.fsync(f.fileno()))
    result["close"] = errno_of(f.close)
    json.dump(result, sys.stdout)


def cmd_half_write(a):
    with open(a.datafile, "rb") as f:
        data = f.read()
    f = open(a.path, a.mode + "b", buffering=0)
    f.write(data)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    time.sleep(120)


def cmd_fork_child(a):
    import subprocess
    with open(a.datafile, "rb") as f:
        data = f.read()
    f = open(a.path, "wb", buffering=0)
    f.write(data)
    if a.how == "fork-exit":
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    elif a.how == "exec-cloexec":
        # The descriptor is close-on-exec (Python's default): the exec drops it.
        subprocess.run(["true"], close_fds=False, check=True)
    else:
        # pass_fds makes it inheritable: "true" holds it until it exits.
        subprocess.run(["true"], pass_fds=(f.fileno(),), check=True)
    sys.stdout.write("written\n")
    sys.stdout.flush()
    sys.stdin.readline()
    json.dump({"close": errno_of(f.close)}, sys.stdout)


def cmd_probe(a):
    result = {"exists": os.path.exists(a.path), "listed": None, "stat": None, "read": None, "data": None}
    try:
        result["listed"] = os.path.basename(a.path) in os.listdir(os.path.dirname(a.path) or ".")
    except OSError:
        pass
    result["stat"] = errno_of(lambda: os.stat(a.path))
    try:
        with open(a.path, encoding="utf-8") as f:
            result["data"] = f.read()
    except OSError as e:
        result["read"] = e.errno
    json.dump(result, sys.stdout)


def cmd_try_write(a):
    if a.umask is not None:
        os.umask(int(a.umask, 8))
    result = {"step": None, "errno": None}
    try:
        f = open(a.path, "w", encoding="utf-8")
    except OSError as e:
        json.dump({"step": "open", "errno": e.errno}, sys.stdout)
        return

    def write():
        if a.json:
            json.dump(json.loads(a.text), f)
        else:
            f.write(a.text)
        f.flush()

    for step, fn in (("write", write), ("close", f.close)):
        e = errno_of(fn)
        if e is not None and result["step"] is None:
            result = {"step": step, "errno": e}
    json.dump(result, sys.stdout)


def cmd_write_wait(a):
    f = open(a.path, "w", encoding="utf-8")
    json.dump(json.loads(a.text), f)
    f.flush()
    sys.stdout.write("written\n")
    sys.stdout.flush()
    sys.stdin.readline()
    json.dump({"close": errno_of(f.close)}, sys.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("mkdir")
    s.add_argument("path")
    s.set_defaults(fn=cmd_mkdir)
    s = sub.add_parser("ls")
    s.add_argument("path")
    s.set_defaults(fn=cmd_ls)
    s = sub.add_parser("cat")
    s.add_argument("path")
    s.set_defaults(fn=cmd_cat)
    s = sub.add_parser("write")
    s.add_argument("path")
    s.add_argument("datafile")
    s.add_argument("--mode", choices=("w", "r+", "x"), default="w")
    s.add_argument("--fsync", action="store_true")
    s.set_defaults(fn=cmd_write)
    s = sub.add_parser("fork-child")
    s.add_argument("path")
    s.add_argument("datafile")
    s.add_argument("--how", choices=("fork-exit", "exec-cloexec", "exec-inherit"), required=True)
    s.set_defaults(fn=cmd_fork_child)
    s = sub.add_parser("half-write")
    s.add_argument("path")
    s.add_argument("datafile")
    s.add_argument("--mode", choices=("w", "r+"), default="w")
    s.set_defaults(fn=cmd_half_write)
    s = sub.add_parser("probe")
    s.add_argument("path")
    s.set_defaults(fn=cmd_probe)
    s = sub.add_parser("try-write")
    s.add_argument("path")
    s.add_argument("text")
    s.add_argument("--json", action="store_true")
    s.add_argument("--umask")
    s.set_defaults(fn=cmd_try_write)
    s = sub.add_parser("write-wait")
    s.add_argument("path")
    s.add_argument("text")
    s.set_defaults(fn=cmd_write_wait)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
