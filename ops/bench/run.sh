#!/usr/bin/env bash
# Builds the benchmark in release mode and runs it against fresh scratch databases on the
# server in DATABASE_URL (bench_<random> for the event store, bench_<random>_gw for the
# in-process gateway), which are dropped afterwards. With no arguments it runs every phase
# (~5 min, the verify phase included) and ends with one summary table; `--quick` runs a short
# version of every phase as a smoke check.
# Extra arguments go to the bench, e.g. `ops/bench/run.sh --only landing,live` or
# `ops/bench/run.sh --seconds 3 --diagnose`.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

cargo build --release -p bench

db="bench_$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
keep=0
for arg in "$@"; do
    [[ "$arg" == "--keep-db" ]] && keep=1
done

# The bench drops its databases itself (also on error and Ctrl-C); this is the safety net for
# a bench that was killed outright.
cleanup() {
    if [[ $keep == 0 ]] && command -v psql >/dev/null 2>&1; then
        for name in "$db" "${db}_gw"; do
            psql "$DATABASE_URL" -qAtX -c "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null 2>&1 || true
        done
    fi
}
trap cleanup EXIT

./target/release/bench --db-name "$db" "$@"
