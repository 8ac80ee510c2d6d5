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

# The fuzz targets (fuzz/, cargo-fuzz layout) are built and each run briefly from its seeds; a
# campaign with coverage is `cargo install cargo-fuzz && cargo fuzz run <target> -s none`.
echo "==> fuzz targets (build, short run)"
cargo build -p valet-fuzz --bins
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in callback_query token_response reference config; do
  mkdir -p "$scratch/$target"
  "target/debug/$target" -runs=20000 -max_len=4096 -seed=1 "$scratch/$target" "fuzz/seeds/$target" 2>"$scratch/$target.log" \
    || { cat "$scratch/$target.log" >&2; echo "error: fuzz target $target failed" >&2; exit 1; }
done

echo "==> Python client (clients/python)"
./tests/python.sh
