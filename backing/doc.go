// Package backing is mergefs's backing store: it reads records and replaces them atomically under a
// per-record lock that holds across goroutines, processes, and mergefs daemons that share one backing
// directory (two hosts on one network filesystem). Linux only.
//
// # Locking
//
// A commit takes two locks, always in this order:
//
//  1. An in-process lock, one per lock slot, kept in a refcounted map whose entries are freed when the
//     last user leaves. There is no global lock: commits to records in different slots run in parallel.
//  2. An open file description (OFD) write lock on one byte of the lock file ".mergefs.lock" at the
//     backing root. The byte is the record's lock slot: a hash of its cleaned relative name (see
//     lockSlot). Every daemon that shares the backing root must use the same root and the same hash;
//     two records whose names hash to one slot merely serialise each other.
//
// The in-process lock comes first because OFD locks belong to an open file description, and all of a
// store's goroutines share one: the kernel would let two of them "hold" the same byte at once, and the
// first to unlock would drop it for both. For the same reason the OFD lock is released before the
// in-process lock, and the in-process lock is keyed by slot, not by name.
//
// OFD locks are POSIX byte-range locks to everything outside the kernel: NFS (NLM or NFSv4 byte-range
// locks), CephFS and GlusterFS pass them to the server, so daemons on different hosts exclude each other
// through the same lock file.
//
// # Commits
//
// A commit reads the record as it is (theirs) through its parent directory's descriptor, calls the
// merge callback, writes the result into a temporary file in the same directory, gives it the record's
// mode and owner, and renames it over the record, so a reader sees the old bytes or the new ones and
// never a partial file. A commit with a Source instead writes the merged bytes into Source in place and
// renames Source over the record. Commits to one record that queue for its in-process lock are made
// by the next holder in one replacement (group.go): merged one after the other, written once.
//
// # Temporary files and recovery
//
// Temporary files are named ".mergefs.tmp.<random>" (see IsReserved). A writer creates one with
// O_EXCL, then takes a non-blocking OFD write lock on the whole temporary file and checks that the name
// still refers to the file it locked; it keeps that lock until the file has been renamed over the
// record. Open walks the backing tree and, for each temporary file, tries a non-blocking OFD read lock:
// it only succeeds if no live writer holds the file (the kernel, or the lock server on a network
// filesystem, drops a dead process's locks), and only then is the file removed. A writer that loses the
// race between creating and locking its file (recovery locked it first) sees the lock fail or the name
// gone, and starts again with a new name. So recovery never removes a temporary file that a live daemon
// on any host is still writing.
//
// # Path safety
//
// Every name is relative to the root. Its parent directory is opened with openat2 and
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS relative to the root descriptor, and the
// final component is opened with O_NOFOLLOW relative to that directory. A symbolic link on the way or in
// place of a record is refused (ELOOP), a ".." escape is refused (EXDEV), and a directory swapped for a
// symlink during a commit cannot redirect it: the commit works on the directory descriptor it opened.
package backing
