#!/usr/bin/env bash
# Deploy-side checks (scripts/test.sh runs this after the Rust tests, with .venv/bin on PATH):
#   1. cfn-lint template.yaml
#   2. sam validate --lint            (SAM transform + cfn-lint through the SAM CLI)
#   3. infra/cdk: npm ci, cdk synth (offline, placeholder binaries), CDK assertion tests (npm test)
#   4. scripts/lambda-dev-loop.sh: ingest, deliver and flush as Lambda runs them, against moto and the simulator
# The template policy test (crates/relay-e2e/tests/template_policy.rs) runs with `cargo test`.
# `sam build` is NOT run here: it needs the aarch64 Rust target and a release build (scripts/sam-build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [ -d "$root/.venv/bin" ]; then export PATH="$root/.venv/bin:$PATH"; fi

export SAM_CLI_TELEMETRY=0 CDK_DISABLE_CLI_TELEMETRY=true CDK_DISABLE_VERSION_CHECK=true

total_start=$(date +%s)
timings=()
step() { # step NAME COMMAND...
  local name=$1; shift
  local start; start=$(date +%s)
  echo "==> [infra] $name"
  "$@"
  local took=$(( $(date +%s) - start ))
  timings+=("$(printf '%-28s %4ss' "$name" "$took")")
}

for tool in cfn-lint sam; do
  if ! command -v "$tool" >/dev/null; then
    echo "check-infra: $tool not found; install the test tools: python3 -m venv .venv && .venv/bin/pip install -r scripts/requirements-test.txt" >&2
    exit 1
  fi
done

step "cfn-lint template.yaml" cfn-lint template.yaml
# --region: validation is offline, but the SAM translator needs a region name to resolve pseudo parameters.
step "sam validate --lint" sam validate --lint --template-file template.yaml --region us-east-1

if command -v npm >/dev/null; then
  placeholder=$(mktemp -d)
  trap 'rm -rf "$placeholder"' EXIT
  # `cdk synth` packages each function's binary as an asset; for the check, placeholders stand in for
  # the cargo-lambda output (target/lambda/<bin>/bootstrap).
  for bin in ingest deliver flush; do
    mkdir -p "$placeholder/build/$bin"
    printf '#!/bin/sh\necho "placeholder %s: build with cargo lambda" >&2\nexit 1\n' "$bin" >"$placeholder/build/$bin/bootstrap"
  done
  cdk_install() {
    # npm ci wipes node_modules; skip it when node_modules already matches package-lock.json.
    if [ -f node_modules/.package-lock.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
      echo "node_modules is up to date with package-lock.json"
    else
      npm ci --no-audit --no-fund --loglevel=error
    fi
  }
  cdk_synth() {
    # No AWS credentials or endpoint: synth must not call AWS (account lookup), and works offline.
    env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL -u AWS_PROFILE \
      npx --no-install cdk synth --quiet --no-notices --no-version-reporting \
      -c lambdaBuildDir="$placeholder/build" -o "$placeholder/cdk.out"
    test -s "$placeholder/cdk.out/alert-relay.template.json"
  }
  cdk_test() {
    env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL -u AWS_PROFILE npm test
  }
  pushd infra/cdk >/dev/null
  step "infra/cdk npm ci" cdk_install
  step "infra/cdk cdk synth" cdk_synth
  step "infra/cdk npm test" cdk_test
  popd >/dev/null
else
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
  echo "!!! check-infra: npm not found: SKIPPED the CDK app checks (infra/cdk synth + assertion tests) !!!"
  echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
fi

# The three function binaries under a stub Lambda runtime API against moto and the simulator (about 30 s
# with a warm target, about 3 minutes on a clean one; PROFILE=release scripts/lambda-dev-loop.sh for the release binaries).
step "lambda dev loop" scripts/lambda-dev-loop.sh

echo "==> [infra] timings"
printf '    %s\n' "${timings[@]}"
echo "    total                        $(( $(date +%s) - total_start ))s"
