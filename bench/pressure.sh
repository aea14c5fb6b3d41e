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

script=bench/pressure.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
bench_init bench/pressure "$@"
[[ $(uname -s) == Linux ]] || die "the program reads /proc: it runs on Linux only"

# 1. Build.
bench_build geoproxy-pressure bench/pressure bench/pressure

# 2. Run.
bench_run bench/pressure docs/pressure.md "$@"
