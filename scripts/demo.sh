#!/bin/bash
# One-command demo (as root): the same unmodified Python workers -- each request reads a whole
# JSON record, changes its own field and writes the whole record back -- run first against a
# plain directory, then through mergefs mounted in place over that same directory. Prints both
# runs side by side and leaves nothing behind (no mount, no process, no files), also on Ctrl-C.
#
#   sudo ./scripts/demo.sh            # DEMO_SECONDS (default 8) per run, DEMO_WORKERS (4), DEMO_RECORDS (2)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${DEMO_SECONDS:-8}
workers=${DEMO_WORKERS:-4}
records=${DEMO_RECORDS:-2}

die() { echo "demo: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (mergefs mounts with mount(2)): sudo $0"
[ -e /dev/fuse ] || die "no /dev/fuse (modprobe fuse, or give the container the device)"
command -v go >/dev/null || die "go is needed to build mergefs"
command -v python3 >/dev/null || die "python3 is needed for the workers"

# After a crash, scripts/test clears a mount left here (internal/mountinfo.ClearStale:
# a mergefs-demo-* directory whose owner.pid process is gone).
work=$(mktemp -d "${TMPDIR:-/tmp}/mergefs-demo-XXXXXX")
echo $$ > "$work/owner.pid"
data=$work/data
daemon=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$rc" = 0 ] || echo "demo: stopping (status $rc); cleaning up" >&2
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    kill -TERM "$daemon" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$daemon" 2>/dev/null || true
  fi
  if grep -qF " $data " /proc/self/mountinfo; then umount -l "$data" 2>/dev/null || true; fi
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== building mergefs"
go build -ldflags "$(scripts/version-ldflags)" -o "$work/mergefs" ./cmd/mergefs
mkdir "$data"

run_workers() {
  python3 scripts/demo_worker.py --dir "$data" --workers "$workers" --records "$records" --seconds "$seconds"
}

echo "== $workers workers, $records shared records, ${seconds}s: plain directory $data"
plain=$(run_workers)

echo "== the same workers, same path, through mergefs mounted in place over it"
"$work/mergefs" mount --state-dir "$work/state" "$data" 2>"$work/mergefs.log" &
daemon=$!
for _ in $(seq 300); do
  grep -q "mergefs: ready" "$work/mergefs.log" && break
  kill -0 "$daemon" 2>/dev/null || { cat "$work/mergefs.log" >&2; die "mergefs exited"; }
  sleep 0.1
done
grep -q "mergefs: ready" "$work/mergefs.log" || { cat "$work/mergefs.log" >&2; die "mergefs not ready after 30s"; }
merged=$(run_workers)
status=$("$work/mergefs" status --state-dir "$work/state" 2>&1 || true)
kill -TERM "$daemon" 2>/dev/null || true
wait "$daemon" || die "mergefs exited with an error: $(tail -n 3 "$work/mergefs.log")"
daemon=""

python3 - "$plain" "$merged" <<'EOF'
import json, sys
plain, merged = json.loads(sys.argv[1]), json.loads(sys.argv[2])
rows = [
    ("updates attempted", "attempted"),
    ("updates lost", "lost"),
    ("torn reads seen", "torn"),
    ("failed requests (errors)", "errors"),
    ("records corrupt at the end", "corrupt"),
    ("updates made per second", "per_second"),
]
print()
print("%-28s %16s %16s" % ("", "plain directory", "through mergefs"))
for label, key in rows:
    print("%-28s %16d %16d" % (label, plain[key], merged[key]))
print()
loss = 100.0 * plain["lost"] / plain["made"] if plain["made"] else 0
print("plain directory: %.1f%% of the updates the workers made are gone; mergefs: %d lost." % (loss, merged["lost"]))
EOF
echo
echo "mergefs status at the end of its run:"
echo "$status"
