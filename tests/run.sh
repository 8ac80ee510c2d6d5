#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: installs the test peers when they are missing,
# then the quality gates (rustfmt, clippy with warnings as errors) and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

peer=tests/peers/oidc
if ! command -v node >/dev/null 2>&1; then
  echo "error: Node.js >= 20 is required for the OpenID provider test peer (apt install nodejs npm)" >&2
  exit 1
fi
# Reinstall when the lockfile changed since the last install.
if [ ! -f "$peer/node_modules/.package-lock.json" ] || [ "$peer/package-lock.json" -nt "$peer/node_modules/.package-lock.json" ]; then
  echo "==> installing the OpenID provider peer (npm ci in $peer)"
  npm ci --prefix "$peer" --no-audit --no-fund --loglevel=error
fi

# RustyVault, the real Vault-API server for the KV v1 lane; `cargo install` takes minutes, so
# skip it when the pinned version is already on PATH.
rvault_version=0.2.1
export PATH="$HOME/.cargo/bin:$PATH"
if ! rvault --version 2>/dev/null | grep -q "$rvault_version"; then
  echo "==> installing RustyVault $rvault_version (cargo install rusty_vault)"
  cargo install rusty_vault --version "$rvault_version" --locked
fi

echo "==> cargo fmt --check"
cargo fmt --check
echo "==> cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "==> cargo test --all-targets"
cargo test --all-targets

# The fuzz targets (fuzz/, cargo-fuzz layout), built with libFuzzer's coverage instrumentation
# (what `cargo fuzz build -s none` passes; its own target dir, so the test build stays as it is),
# then run from their seeds for a fixed number of inputs. A long campaign is
# `cargo install cargo-fuzz && cargo fuzz run <target> -s none`.
echo "==> fuzz targets (instrumented build, 100,000 inputs each)"
host=$(rustc -vV | sed -n 's/^host: //p')
CARGO_TARGET_DIR=target/fuzz RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing" cargo build -p valet-fuzz --bins --target "$host"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in callback_query token_response reference config; do
  mkdir -p "$scratch/$target"
  "target/fuzz/$host/debug/$target" -runs=100000 -max_len=4096 -seed=1 \
    "$scratch/$target" "fuzz/seeds/$target" 2>"$scratch/$target.log" \
    || { tail -40 "$scratch/$target.log" >&2; echo "error: fuzz target $target failed" >&2; exit 1; }
  grep -E "^#[0-9]+[[:space:]]+DONE" "$scratch/$target.log" | sed "s/^/    $target: /" || true
done

echo "==> deploy files against their validators (tests/deploy.sh)"
./tests/deploy.sh

echo "==> Python client (clients/python)"
./tests/python.sh
