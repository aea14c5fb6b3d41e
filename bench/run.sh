#!/usr/bin/env bash
# bench/run.sh: geoproxy against nginx, HAProxy and Caddy on this machine, over plain HTTP and
# over HTTPS with one certificate.
#
#   bench/run.sh                         # full run (about 8 minutes), writes docs/benchmarks.md
#   bench/run.sh -duration 2s -rounds 1 -rate-rounds 1   # quick try
#   bench/run.sh -h                      # every flag of the harness
#
# Installs what is missing (Debian: nginx, haproxy, caddy, wrk; nghttp2-client for h2load when
# -cases asks for h2), builds geoproxy and the harness (bench/harness) into a temporary
# directory, and runs the harness, which starts every process itself (never as a system
# service), measures, prints the tables and writes docs/benchmarks.md.
# Every process it started is stopped on exit, on error and on Ctrl-C.
set -euo pipefail

script=bench/run.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench/harness "$@"

policy_rc=""
on_exit() { if [[ -n "$policy_rc" ]]; then rm -f "$policy_rc"; fi; }

# 1. Tools. Debian starts a package's service on install; a policy-rc.d that says no keeps
# nginx and haproxy from starting as system services (the harness runs its own instances).
missing=()
for t in nginx haproxy caddy wrk; do
  command -v "$t" >/dev/null || [[ -x "/usr/sbin/$t" ]] || missing+=("$t")
done
# h2load (Debian: nghttp2-client) only for the h2 case (-cases ...,h2).
prev=""
for a in "$@"; do
  case "$prev|$a" in
    -cases\|*h2*|--cases\|*h2*|*\|-cases=*h2*|*\|--cases=*h2*)
      command -v h2load >/dev/null || missing+=(nghttp2-client) ;;
  esac
  prev=$a
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
bench_build geoproxy-bench bench/harness "the harness"
chmod 755 "$tmp" # nginx workers may run as another user

# 3. Run.
bench_run bench/harness docs/benchmarks.md "$@"
