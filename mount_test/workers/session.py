#!/usr/bin/env python3
"""A scripted client for the end-to-end tests: one process (one user) that keeps descriptors open
between steps, so a test can interleave what several users do.

Reads one JSON command per line on stdin and answers one JSON line on stdout:
  {"op": "open", "path": P, "flags": ["O_RDWR", "O_CREAT", ...], "mode": 420}  -> {"fd": N}
  {"op": "read", "fd": N}                       -> {"data": text}   (reads from offset 0 to EOF)
  {"op": "write", "fd": N, "data": text}        -> {"n": bytes written}   (at offset 0)
  {"op": "close", "fd": N}, {"op": "fsync", "fd": N}
  {"op": "fchmod", "fd": N, "mode": M}, {"op": "fchown", "fd": N, "uid": U, "gid": G}
  {"op": "ftruncate", "fd": N, "size": S}
  {"op": "fstat", "fd": N} / {"op": "stat"|"lstat", "path": P}  -> {"uid", "gid", "mode", "size", "ino", "nlink"}
        (ino as a decimal string: JSON numbers do not hold 64 bits)
  {"op": "chmod", "path": P, "mode": M}, {"op": "unlink", "path": P}, {"op": "rmdir", "path": P}
  {"op": "mkdir", "path": P, "mode": M}, {"op": "symlink", "target": T, "path": P}
  {"op": "link", "src": P, "dst": Q}, {"op": "rename", "src": P, "dst": Q}
  {"op": "truncate", "path": P, "size": S}, {"op": "utime", "path": P, "mtime": T}
  {"op": "setxattr", "path": P, "name": N, "value": V}, {"op": "getxattr", "path": P, "name": N}
  {"op": "listxattr", "path": P}                -> {"names": [...]}
  {"op": "cat", "path": P}                      -> {"data": text}
  {"op": "umask", "mask": M}
  {"op": "fill", "fd": N, "size": S}            -> {"n": S}   writes S bytes of "x" from offset 0, 64 KiB at a time
  {"op": "flood", "path": P, "count": C}        -> {"opened": n, "stopped": errno or 0}
        opens P read-only up to C times, stopping at the first error, and keeps the descriptors open
  {"op": "mmap", "fd": N, "shared": bool, "write": bool}  -> {"data": text}
        maps the file (MAP_SHARED or MAP_PRIVATE; writable or read-only) and reads it through the map
  {"op": "maphold", "fd": N, "private": bool} -> {"map": M}   maps the file (shared unless private) and
        read-only, fstat's size, and
        keeps the mapping without touching it; {"op": "mapread", "map": M} -> {"data": text} reads
        through it (a page past the kernel's size of the file kills the session with SIGBUS);
        {"op": "munmap", "map": M} unmaps it
  {"op": "lock", "fd": N, "type": "r"|"w"|"u", "start": S, "len": L, "wait": bool}   fcntl F_SETLK
        (F_SETLKW with wait) of bytes S to S+L-1 (L 0: to the end of the file)
  {"op": "getlk", "fd": N, "type": "r"|"w", "start": S, "len": L} -> {"type": "r"|"w"|"u", "start",
        "len", "pid"}   fcntl F_GETLK: a lock in the way, or "u"
  {"op": "flock", "fd": N, "how": "sh"|"ex"|"un", "nb": bool}   flock(2) (LOCK_NB with nb)
  {"op": "fork"} -> {"child": C}   a child process that holds copies of every descriptor until
        {"op": "reap", "child": C} ends it (and waits for it)
  A command with "interrupt_after": T (seconds) is interrupted by a signal after T if it has not
  returned by then (its call fails with EINTR).
Any failing call answers {"errno": E, "error": name}.
"""

import fcntl
import json
import os
import signal
import struct
import sys

LOCK_TYPES = {"r": fcntl.F_RDLCK, "w": fcntl.F_WRLCK, "u": fcntl.F_UNLCK}
FLOCK = "hhqqi4x"  # struct flock on 64-bit Linux: type, whence, start, len, pid


def interrupted(signum, frame):
    raise InterruptedError(4, "Interrupted system call")


def stat_result(st):
    return {"uid": st.st_uid, "gid": st.st_gid, "mode": st.st_mode & 0o7777, "size": st.st_size,
            "ino": str(st.st_ino), "nlink": st.st_nlink, "type": st.st_mode & 0o170000}


FLOOD = []  # descriptors "flood" keeps open
CHILDREN = {}  # pid -> write end of the pipe the child "fork" made waits on
MAPS = []  # mappings "maphold" keeps, untouched until "mapread"


def run(cmd):
    op = cmd["op"]
    if op == "open":
        flags = 0
        for f in cmd.get("flags", ["O_RDONLY"]):
            flags |= getattr(os, f)
        return {"fd": os.open(cmd["path"], flags, cmd.get("mode", 0o644))}
    if op == "read":
        fd = cmd["fd"]
        chunks = []
        off = 0
        while True:
            b = os.pread(fd, 1 << 16, off)
            if not b:
                break
            chunks.append(b)
            off += len(b)
        return {"data": b"".join(chunks).decode("utf-8", "replace")}
    if op == "write":
        return {"n": os.pwrite(cmd["fd"], cmd["data"].encode(), 0)}
    if op == "close":
        os.close(cmd["fd"])
        return {}
    if op == "fsync":
        os.fsync(cmd["fd"])
        return {}
    if op == "fchmod":
        os.fchmod(cmd["fd"], cmd["mode"])
        return {}
    if op == "fchown":
        os.fchown(cmd["fd"], cmd["uid"], cmd["gid"])
        return {}
    if op == "ftruncate":
        os.ftruncate(cmd["fd"], cmd["size"])
        return {}
    if op == "fstat":
        return stat_result(os.fstat(cmd["fd"]))
    if op == "stat":
        return stat_result(os.stat(cmd["path"]))
    if op == "lstat":
        return stat_result(os.lstat(cmd["path"]))
    if op == "chmod":
        os.chmod(cmd["path"], cmd["mode"])
        return {}
    if op == "unlink":
        os.unlink(cmd["path"])
        return {}
    if op == "rmdir":
        os.rmdir(cmd["path"])
        return {}
    if op == "mkdir":
        os.mkdir(cmd["path"], cmd.get("mode", 0o777))
        return {}
    if op == "symlink":
        os.symlink(cmd["target"], cmd["path"])
        return {}
    if op == "link":
        os.link(cmd["src"], cmd["dst"])
        return {}
    if op == "rename":
        os.rename(cmd["src"], cmd["dst"])
        return {}
    if op == "truncate":
        os.truncate(cmd["path"], cmd["size"])
        return {}
    if op == "utime":
        os.utime(cmd["path"], (cmd["mtime"], cmd["mtime"]))
        return {}
    if op == "setxattr":
        os.setxattr(cmd["path"], cmd["name"], cmd["value"].encode())
        return {}
    if op == "getxattr":
        return {"value": os.getxattr(cmd["path"], cmd["name"]).decode("utf-8", "replace")}
    if op == "listxattr":
        return {"names": sorted(os.listxattr(cmd["path"]))}
    if op == "cat":
        with open(cmd["path"], "rb") as f:
            return {"data": f.read().decode("utf-8", "replace")}
    if op == "mmap":
        import mmap
        size = os.fstat(cmd["fd"]).st_size
        flags = mmap.MAP_SHARED if cmd.get("shared") else mmap.MAP_PRIVATE
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if cmd.get("write") else 0)
        m = mmap.mmap(cmd["fd"], size, flags=flags, prot=prot)
        try:
            return {"data": m[:].decode("utf-8", "replace")}
        finally:
            m.close()
    if op == "maphold":
        import mmap
        flags = mmap.MAP_PRIVATE if cmd.get("private") else mmap.MAP_SHARED
        m = mmap.mmap(cmd["fd"], os.fstat(cmd["fd"]).st_size, flags=flags, prot=mmap.PROT_READ)
        MAPS.append(m)
        return {"map": len(MAPS) - 1}
    if op == "mapread":
        return {"data": MAPS[cmd["map"]][:].decode("utf-8", "replace")}
    if op == "munmap":
        MAPS[cmd["map"]].close()
        return {}
    if op == "fill":
        chunk = b"x" * (1 << 16)
        off = 0
        while off < cmd["size"]:
            off += os.pwrite(cmd["fd"], chunk[: min(len(chunk), cmd["size"] - off)], off)
        return {"n": off}
    if op == "flood":
        opened = 0
        try:
            while opened < cmd["count"]:
                FLOOD.append(os.open(cmd["path"], os.O_RDONLY))
                opened += 1
        except OSError as e:
            return {"opened": opened, "stopped": e.errno}
        return {"opened": opened, "stopped": 0}
    if op == "lock":
        arg = struct.pack(FLOCK, LOCK_TYPES[cmd["type"]], os.SEEK_SET, cmd.get("start", 0), cmd.get("len", 0), 0)
        fcntl.fcntl(cmd["fd"], fcntl.F_SETLKW if cmd.get("wait") else fcntl.F_SETLK, arg)
        return {}
    if op == "getlk":
        arg = struct.pack(FLOCK, LOCK_TYPES[cmd["type"]], os.SEEK_SET, cmd.get("start", 0), cmd.get("len", 0), 0)
        typ, _, start, length, pid = struct.unpack(FLOCK, fcntl.fcntl(cmd["fd"], fcntl.F_GETLK, arg))
        name = {v: k for k, v in LOCK_TYPES.items()}[typ]
        return {"type": name, "start": start, "len": length, "pid": pid}
    if op == "flock":
        how = {"sh": fcntl.LOCK_SH, "ex": fcntl.LOCK_EX, "un": fcntl.LOCK_UN}[cmd["how"]]
        fcntl.flock(cmd["fd"], how | (fcntl.LOCK_NB if cmd.get("nb") else 0))
        return {}
    if op == "fork":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        os.close(r)
        CHILDREN[pid] = w
        return {"child": pid}
    if op == "reap":
        os.close(CHILDREN.pop(cmd["child"]))
        os.waitpid(cmd["child"], 0)
        return {}
    if op == "umask":
        os.umask(cmd["mask"])
        return {}
    raise ValueError("unknown op %r" % op)


def main():
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        try:
            if "interrupt_after" in cmd:
                signal.signal(signal.SIGALRM, interrupted)
                signal.setitimer(signal.ITIMER_REAL, cmd["interrupt_after"])
            try:
                result = run(cmd)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except OSError as e:
            result = {"errno": e.errno, "error": os.strerror(e.errno)}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
