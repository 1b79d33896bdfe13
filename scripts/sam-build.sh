#!/usr/bin/env bash
# Builds the three Lambda functions for deployment with `sam build` (BuildMethod: rust-cargolambda):
# installs cargo-lambda and ziglang (the cross-linker cargo-lambda uses) from PyPI into .venv, checks the
# Rust target for arm64, then runs `sam build`. Output: .aws-sam/build (then `sam deploy`, docs/deploy.md).
# Not part of scripts/test.sh: a release build of the AWS SDK crates takes many minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv="$root/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if [ ! -x "$venv/bin/sam" ] || [ ! -x "$venv/bin/cargo-lambda" ] || ! "$venv/bin/python" -c "import ziglang" 2>/dev/null; then
  echo "==> installing aws-sam-cli, cargo-lambda, ziglang into .venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/requirements-test.txt 'cargo-lambda==1.*' 'ziglang<1'
fi
export PATH="$venv/bin:$PATH"
export SAM_CLI_TELEMETRY=0

# The functions run on Graviton (Architectures: [arm64]): cargo needs the aarch64 standard library.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
  echo "==> adding the Rust target aarch64-unknown-linux-gnu (needs network access to the Rust distribution server)"
  if ! rustup target add aarch64-unknown-linux-gnu; then
    echo "sam-build: the aarch64-unknown-linux-gnu Rust target is missing and could not be installed;" >&2
    echo "           run 'rustup target add aarch64-unknown-linux-gnu' on a machine with access, then retry." >&2
    exit 1
  fi
fi

start=$(date +%s)
sam build --template-file template.yaml "$@"
echo "==> sam build took $(( $(date +%s) - start ))s; artifacts in .aws-sam/build"
