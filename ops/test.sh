#!/usr/bin/env bash
# The whole test suite (the README's second command; .ci/run calls it too).
#
# Starts the machine's Postgres if it is not running, checks the formatter and the linter,
# then runs every test of the workspace with nextest (one process per test, parallel) or,
# where nextest is missing, cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests' Postgres (testkit makes a uniquely named database per test there, so two runs may
# share it). Only exported here, not set in .cargo/config.toml, whose [env] cargo would also
# hand to `cargo run` (see README).
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

# --- Postgres -------------------------------------------------------------------------
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "installing PostgreSQL" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    # The machines this runs on use trust auth on loopback; a fresh Debian install does not.
    version="$(ls /etc/postgresql | sort -V | tail -n1)"
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    printf 'host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n' | cat - "$hba" > "$hba.new"
    mv "$hba.new" "$hba" && chown postgres:postgres "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$version" main restart || true
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
    for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
fi
pg_isready -h 127.0.0.1 -p 5432

# --- toolchain pieces ---------------------------------------------------------------------
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
# tests/api/certificates.rs checks the license certificates with an independent Ed25519
# implementation: Node's (>= 18) crypto and WebCrypto.
if ! command -v node >/dev/null 2>&1; then
    echo "installing Node.js" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The README's first command (debug profile) builds the binary alone, with fewer features than
# the workspace's test build; build it now so its check in tests/api/embedded.rs, which runs
# `cargo run -- serve`, does not compile in parallel with the other tests.
cargo build --locked

if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
    # nextest does not run doctests.
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi
