"""Generates the gRPC stubs from Valet's proto while the package is built.

The stubs are never hand-edited and never committed: `build_py` runs grpcio-tools' protoc on
`proto/valet/v1/valet.proto` and writes `valet/v1/valet_pb2{,_grpc}.py{,i}` into the build
tree, so every wheel matches the proto it was built from. Everything else about the package is
in pyproject.toml.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO = Path("valet") / "v1" / "valet.proto"


def proto_root() -> Path:
    """The directory holding `valet/v1/valet.proto`.

    `VALET_PROTO_DIR` wins (for builds outside the repository); otherwise the repository's
    `proto/`, two levels up from this file, since `pip install ./clients/python` builds in-tree.
    """
    candidates = [Path(p) for p in [os.environ.get("VALET_PROTO_DIR", "")] if p]
    candidates += [HERE / "proto", HERE.parent.parent / "proto"]
    for root in candidates:
        if (root / PROTO).is_file():
            return root
    tried = ", ".join(str(c / PROTO) for c in candidates)
    raise SystemExit(
        f"valet-client: cannot find the Valet proto (tried {tried}). Build from a checkout of "
        "the Valet repository (`pip install ./clients/python`), or set VALET_PROTO_DIR to the "
        "directory that holds valet/v1/valet.proto."
    )


def generate(out: Path) -> None:
    """Runs protoc (from grpcio-tools) for the messages, their type stubs and the services."""
    try:
        from grpc_tools import protoc
    except ImportError as e:  # pragma: no cover - pyproject.toml's build requirements add it
        raise SystemExit(
            "valet-client: building needs grpcio-tools (a build requirement in pyproject.toml)"
        ) from e
    root = proto_root()
    package = out / "valet" / "v1"
    package.mkdir(parents=True, exist_ok=True)
    # protoc needs its own well-known types (none are imported today, but keep the include).
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(root / PROTO),
        ]
    )
    if code != 0:
        raise SystemExit(f"valet-client: protoc failed on {root / PROTO} (exit {code})")
    init = package / "__init__.py"
    init.write_text('"""Generated from proto/valet/v1/valet.proto at build time."""\n')


class BuildPyWithStubs(build_py):
    """`build_py` that first writes the generated stubs into the build tree."""

    def run(self) -> None:
        generate(Path(self.build_lib))
        super().run()


# Guarded so the stub check in tests/test_stubs.py can import `generate` without building.
if __name__ == "__main__":
    setup(cmdclass={"build_py": BuildPyWithStubs})
