#!/usr/bin/env bash
# The ONE test command (README "Testing"; .ci/run calls it).
#
# 1. creates .venv with the Python tools the tests need (moto server, cfn-lint),
# 2. installs cargo-deny into .tools and checks Cargo.lock against deny.toml (licences, bans, sources; advisories
#    only when a local RustSec database exists),
# 3. starts moto_server on a free loopback port and points the AWS SDK at it,
# 4. runs every Rust test in the workspace (AWS adapter and Lambda tests included),
# 5. takes a headless Chromium screenshot of the operator page (scripts/screenshot-ops.sh),
# 6. runs the deploy-side checks (scripts/check-infra.sh),
# 7. stops moto_server whatever happened.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

venv="$root/.venv"
if [ ! -x "$venv/bin/moto_server" ] || ! "$venv/bin/python" -m pip freeze -q -r scripts/requirements-test.txt >/dev/null 2>&1 \
   || [ scripts/requirements-test.txt -nt "$venv/.installed" ]; then
  echo "==> installing test tools into .venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
  touch "$venv/.installed"
fi
export PATH="$venv/bin:$PATH"

# cargo-deny, like the Python tools, lives in the checkout (.tools) and is installed only when missing: a cold
# `cargo install` takes about 3 minutes on 2 cores. It has no optional features; deny.toml is written for 0.20.
tools="$root/.tools"
cargo_deny="$tools/bin/cargo-deny"
if ! "$cargo_deny" --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
  echo "==> installing cargo-deny into .tools"
  cargo install cargo-deny --locked --version '~0.20' --root "$tools"
fi

# The dependency checks run offline: `cargo fetch` downloads every locked package (all platforms) from
# crates.io, then cargo-deny reads only Cargo.lock and those sources. Duplicate versions are warnings.
echo "==> cargo deny check licenses bans sources"
cargo fetch --locked --quiet
"$cargo_deny" deny --offline --locked check --hide-inclusion-graph licenses bans sources
# Advisories need the RustSec database, a git clone from GitHub that this test command does not fetch. Where a
# copy exists (`cargo deny fetch db` on a machine that can reach GitHub, or one copied into
# $CARGO_HOME/advisory-dbs) it is checked offline; a copy older than 90 days fails (deny.toml).
advisory_dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
if compgen -G "$advisory_dbs/advisory-db-*/.git" >/dev/null; then
  echo "==> cargo deny check advisories (local database in $advisory_dbs)"
  "$cargo_deny" deny --offline --locked check advisories
else
  echo "==> cargo deny check advisories: skipped, no local RustSec database in $advisory_dbs"
fi

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
moto_log=$(mktemp)
echo "==> starting moto_server on 127.0.0.1:$port"
moto_server -H 127.0.0.1 -p "$port" >"$moto_log" 2>&1 &
moto_pid=$!
cleanup() { kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true; rm -f "$moto_log"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  if "$venv/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then break; fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then cat "$moto_log"; echo "moto_server did not start" >&2; exit 1; fi
  sleep 0.1
done

export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_SESSION_TOKEN=testing AWS_REGION=us-east-1
export RELAY_REQUIRE_MOTO=1

echo "==> cargo test --workspace"
cargo test --workspace --all-targets --locked "$@"
cargo test --workspace --doc --locked

# The local-mode build without the AWS SDK (the quick start's `--no-default-features`): it compiles, and
# `replay-dlq --aws` says it is not built in. Only the relay binary's own unit tests, so ≈ 1 minute.
echo "==> relay without the aws feature"
cargo test --locked -p relay --no-default-features --bin relay

# The operator page in a real browser (skipped with a message when /usr/bin/chromium is absent); the
# screenshot goes to a temporary file, docs/operator-page.png is refreshed by running the script by hand.
echo "==> operator page in headless Chromium"
shot=$(mktemp --suffix .png)
RELAY_BIN="$root/target/debug/relay" scripts/screenshot-ops.sh "$shot"
rm -f "$shot"

if [ -x scripts/check-infra.sh ]; then
  echo "==> deploy-side checks"
  scripts/check-infra.sh
fi
echo "==> all tests passed"
