#!/bin/bash
# Installs mergefs: the binary, the systemd template unit, the mount(8) helper and the README.
# Idempotent: files that are already in place and identical are left alone; others are replaced
# atomically (a running daemon keeps its binary). Run as root from a checkout:
#
#   sudo ./scripts/install.sh
#
# MERGEFS_BIN=PATH installs that binary instead of building one; DESTDIR=DIR installs under DIR
# (packaging, tests) and skips `systemctl daemon-reload`.
set -euo pipefail
cd "$(dirname "$0")/.."

destdir=${DESTDIR:-}
if [ -z "$destdir" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or set DESTDIR)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bin=${MERGEFS_BIN:-}
if [ -z "$bin" ]; then
  command -v go >/dev/null || { echo "install.sh: go is needed to build mergefs (or set MERGEFS_BIN)" >&2; exit 1; }
  echo "building mergefs"
  # Stamped with the checkout's git revision (mergefs version), which Go leaves out under
  # GOFLAGS=-buildvcs=false and in git worktrees.
  go build -ldflags "$(scripts/version-ldflags)" -o "$work/mergefs" ./cmd/mergefs
  bin=$work/mergefs
fi

changed=0
# put SRC DST MODE: copy unless identical, through a temporary name and a rename.
put() {
  local src=$1 dst=$destdir$2 mode=$3
  if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "${mode#0}" ]; then
    echo "unchanged  $2"
    return
  fi
  mkdir -p "$(dirname "$dst")"
  install -m "$mode" "$src" "$dst.new.$$"
  mv -f "$dst.new.$$" "$dst"
  echo "installed  $2"
  changed=1
}

put "$bin" /usr/local/bin/mergefs 0755
put scripts/mergefs@.service /etc/systemd/system/mergefs@.service 0644
# mount(8) looks for helpers in /sbin (a symlink to /usr/sbin on merged-/usr systems).
put scripts/mount.fuse.mergefs /sbin/mount.fuse.mergefs 0755
put README.md /usr/local/share/doc/mergefs/README.md 0644
install -d -m 0755 "$destdir/etc/mergefs"
install -d -m 0700 "$destdir/var/lib/mergefs"

if [ -z "$destdir" ] && [ "$changed" = 1 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
cat <<EOF
mergefs is installed. Mount a storage path in place, for example /srv/data:
  systemctl enable --now "mergefs@\$(systemd-escape --path /srv/data).service"
or with mount(8) / fstab:
  mount -t fuse.mergefs /srv/data /srv/data
EOF
