#!/usr/bin/env bash
# bench/run.sh: geoproxy against nginx, HAProxy and Caddy on this machine, one table.
#
#   bench/run.sh                         # full run (about 6 minutes), writes docs/benchmarks.md
#   bench/run.sh -duration 2s -rounds 1 -rate-rounds 1   # quick try
#   bench/run.sh -h                      # every flag of the harness
#
# Installs what is missing (Debian: nginx, haproxy, caddy, wrk), builds geoproxy and the harness
# (bench/harness) into a temporary directory, and runs the harness, which starts every process
# itself (never as a system service), measures, prints the table and writes docs/benchmarks.md.
# Every process it started is stopped on exit, on error and on Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

for a in "$@"; do
  case "$a" in
    -h|-help|--help) exec go run ./bench/harness -h ;;
  esac
done

command -v go >/dev/null || die "go is not on PATH (Go 1.26 or newer is needed)"

tmp=""
hpid=""
policy_rc=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$policy_rc" ]]; then rm -f "$policy_rc"; fi
  if [[ -n "$hpid" ]] && kill -0 "$hpid" 2>/dev/null; then
    kill -TERM "$hpid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$hpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$hpid" 2>/dev/null || true
  fi
  # Anything the harness started and could not stop itself (it was killed): each process
  # leads its own process group, recorded in $tmp/pids.
  if [[ -n "$tmp" && -d "$tmp/pids" ]]; then
    local f pid left=()
    for f in "$tmp"/pids/*.pid; do
      [[ -e "$f" ]] || continue
      pid=$(<"$f")
      [[ "$pid" =~ ^[0-9]+$ ]] || continue
      kill -TERM -- "-$pid" 2>/dev/null && left+=("$pid")
    done
    if ((${#left[@]})); then
      sleep 2
      for pid in "${left[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
      say "stopped ${#left[@]} leftover process group(s)"
    fi
  fi
  if [[ -n "$tmp" && -d "$tmp" ]]; then
    case $rc in
      0|130|143) rm -rf "$tmp" ;;
      *) say "logs and configs kept in $tmp" ;;
    esac
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Tools. Debian starts a package's service on install; a policy-rc.d that says no keeps
# nginx and haproxy from starting as system services (the harness runs its own instances).
missing=()
for t in nginx haproxy caddy wrk; do
  command -v "$t" >/dev/null || [[ -x "/usr/sbin/$t" ]] || missing+=("$t")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them: install them by hand"
  sudo=""
  if [[ $(id -u) != 0 ]]; then command -v sudo >/dev/null || die "installing ${missing[*]} needs root"; sudo=sudo; fi
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    policy_rc=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy_rc" >/dev/null
    $sudo chmod 755 "$policy_rc"
  fi
  $sudo apt-get update -qq || die "apt-get update failed"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    || die "apt-get install ${missing[*]} failed"
  if [[ -n "$policy_rc" ]]; then $sudo rm -f "$policy_rc"; policy_rc=""; fi
fi
export PATH="$PATH:/usr/sbin:/sbin"

# 2. Build.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/geoproxy-bench.XXXXXX")
chmod 755 "$tmp" # nginx workers may run as another user
say "building geoproxy and the harness into $tmp"
go build -o "$tmp/geoproxy" ./cmd/geoproxy || die "building geoproxy (go build ./cmd/geoproxy) failed"
go build -o "$tmp/harness" ./bench/harness || die "building the harness (go build ./bench/harness) failed"

# 3. Run. In the background, so that a TERM to this script reaches the harness at once.
cmdline="bench/run.sh"
if (($#)); then cmdline+=$(printf ' %q' "$@"); fi
"$tmp/harness" -workdir "$tmp" -geoproxy "$tmp/geoproxy" -out "$root/docs/benchmarks.md" \
  -command "$cmdline" "$@" &
hpid=$!
rc=0
wait "$hpid" || rc=$?
hpid=""
exit "$rc"
