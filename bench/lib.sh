# bench/lib.sh: what bench/run.sh and bench/pressure.sh share, sourced by both. Each builds
# geoproxy and its Go program (bench/harness, bench/pressure) into a temporary directory and
# runs the program there, which starts every process itself, each leading its own process
# group with its id in $tmp/pids. On exit, on error and on Ctrl-C the program is stopped,
# then anything it started and could not stop itself; the directory is removed unless the
# run failed.
#
# The sourcing script sets `script` (its path from the repository's root) first; sourcing
# moves to the root. An `on_exit` function, if the script defines one, runs first at exit.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$script" "$*" >&2; exit 1; }

tmp=""  # the temporary directory: builds, configs, logs and pid files
prog="" # the program's pid while it runs

# bench_init PKG ARGS...: shows PKG's flags instead when ARGS ask for help, checks for Go
# and sets the traps that clean up.
bench_init() {
  local pkg=$1 a
  shift
  for a in "$@"; do
    case "$a" in
      -h|-help|--help) exec go run "./$pkg" -h ;;
    esac
  done
  command -v go >/dev/null || die "go is not on PATH (Go 1.26 or newer is needed)"
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if declare -F on_exit >/dev/null; then on_exit; fi
  if [[ -n "$prog" ]] && kill -0 "$prog" 2>/dev/null; then
    kill -TERM "$prog" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$prog" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$prog" 2>/dev/null || true
  fi
  # Anything the program started and could not stop itself (it was killed): each process
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

# bench_build PREFIX PKG WHAT: makes $tmp, named after PREFIX, and builds geoproxy and PKG
# (called WHAT in messages) into it.
bench_build() {
  local prefix=$1 pkg=$2 what=$3
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXX")
  say "building geoproxy and $what into $tmp"
  go build -o "$tmp/geoproxy" ./cmd/geoproxy || die "building geoproxy (go build ./cmd/geoproxy) failed"
  go build -o "$tmp/${pkg##*/}" "./$pkg" || die "building $what (go build ./$pkg) failed"
}

# bench_run PKG REPORT ARGS...: runs PKG's program, built by bench_build, with the report
# going to REPORT (under the root) and ARGS after, and exits with its status. It runs in the
# background, so that a TERM to the script reaches it at once.
bench_run() {
  local pkg=$1 report=$2 cmdline=$script rc=0
  shift 2
  if (($#)); then cmdline+=$(printf ' %q' "$@"); fi
  "$tmp/${pkg##*/}" -workdir "$tmp" -geoproxy "$tmp/geoproxy" -out "$root/$report" \
    -command "$cmdline" "$@" &
  prog=$!
  wait "$prog" || rc=$?
  prog=""
  exit "$rc"
}
