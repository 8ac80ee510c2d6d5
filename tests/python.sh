#!/usr/bin/env bash
# The Python client's tests (clients/python): a venv under clients/python/.venv with the pinned
# requirements.lock (recreated only when the lock changes), the package installed from the
# repository as users do (`pip install ./clients/python`, stubs generated from proto/ at build
# time), then pytest against the real daemon and the OpenID provider peer.
#
# Needs the daemon binary already built (./tests/run.sh builds it with `cargo test`); VALET_BIN
# points at another one. Needs python3.11 or newer, and the peer from tests/peers/oidc
# (npm ci, as ./tests/run.sh does). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

client=clients/python
venv=$client/.venv
lock=$client/requirements.lock

export VALET_BIN="${VALET_BIN:-$PWD/target/debug/valet}"
if [ ! -x "$VALET_BIN" ]; then
  echo "error: the valet binary is missing at $VALET_BIN: build it first (cargo build, or" \
    "./tests/run.sh) or set VALET_BIN" >&2
  exit 1
fi

python=""
for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
    "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "error: Python >= 3.11 is required for the Python client's tests (set PYTHON=...)" >&2
  exit 1
fi

# The venv is reused while the lock and the interpreter are unchanged.
stamp="$(sha256sum "$lock" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ ! -f "$venv/.lock-stamp" ] || [ "$(cat "$venv/.lock-stamp")" != "$stamp" ]; then
  echo "==> creating $venv from $lock"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$lock"
  "$venv/bin/pip" check --disable-pip-version-check
  echo "$stamp" >"$venv/.lock-stamp"
fi

echo "==> pip install ./$client"
# --no-build-isolation: the build uses the lock's grpcio-tools and setuptools, no download.
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-build-isolation --no-deps \
  --force-reinstall "./$client"
"$venv/bin/pip" check --disable-pip-version-check

echo "==> pytest $client/tests"
cd "$client"
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
