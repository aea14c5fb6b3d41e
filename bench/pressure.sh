#!/usr/bin/env bash
# bench/pressure.sh: geoproxy's memory and a normal client's latency while slow and greedy
# clients attack it, each engine in turn, on this machine, on loopback.
#
#   bench/pressure.sh                              # full run (about 2 minutes), writes docs/pressure.md
#   bench/pressure.sh -request-memory 64MiB        # with limits.request_memory in the config
#   bench/pressure.sh -duration 3s -baseline 2s -out ""   # quick try, report on stdout only
#   bench/pressure.sh -h                           # every flag of the program
#
# Builds geoproxy and the program (bench/pressure) into a temporary directory and runs the
# program, which runs the backend itself and starts a fresh geoproxy for each phase,
# measures, prints the report and writes docs/pressure.md. Every process it started is stopped
# on exit, on error and on Ctrl-C.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench/pressure.sh: %s\n' "$*" >&2; exit 1; }

for a in "$@"; do
  case "$a" in
    -h|-help|--help) exec go run ./bench/pressure -h ;;
  esac
done

command -v go >/dev/null || die "go is not on PATH (Go 1.26 or newer is needed)"
[[ $(uname -s) == Linux ]] || die "the program reads /proc: it runs on Linux only"

tmp=""
prog=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$prog" ]] && kill -0 "$prog" 2>/dev/null; then
    kill -TERM "$prog" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$prog" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$prog" 2>/dev/null || true
  fi
  # Any geoproxy the program started and could not stop itself (it was killed): each leads
  # its own process group, recorded in $tmp/pids.
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

# 1. Build.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/geoproxy-pressure.XXXXXX")
say "building geoproxy and bench/pressure into $tmp"
go build -o "$tmp/geoproxy" ./cmd/geoproxy || die "building geoproxy (go build ./cmd/geoproxy) failed"
go build -o "$tmp/pressure" ./bench/pressure || die "building the program (go build ./bench/pressure) failed"

# 2. Run. In the background, so that a TERM to this script reaches the program at once.
cmdline="bench/pressure.sh"
if (($#)); then cmdline+=$(printf ' %q' "$@"); fi
"$tmp/pressure" -workdir "$tmp" -geoproxy "$tmp/geoproxy" -out "$root/docs/pressure.md" \
  -command "$cmdline" "$@" &
prog=$!
rc=0
wait "$prog" || rc=$?
prog=""
exit "$rc"
