"""The installed stubs are exactly what the build generates from proto/valet/v1 today: a changed
proto with a stale install (or a hand-edited stub) fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import valet.v1

from support import REPO

SETUP = REPO / "clients" / "python" / "setup.py"
GENERATED = ("valet_pb2.py", "valet_pb2.pyi", "valet_pb2_grpc.py")


def test_installed_stubs_match_the_proto(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("valet_build", SETUP)
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    build.generate(tmp_path)

    installed = Path(valet.v1.__file__).parent
    assert "site-packages" in str(installed), (
        f"tests must run against the installed package: {installed}"
    )
    for name in GENERATED:
        fresh = (tmp_path / "valet" / "v1" / name).read_text()
        assert (installed / name).read_text() == fresh, (
            f"{name} differs from what proto/valet/v1/valet.proto generates: "
            "reinstall with `pip install ./clients/python`"
        )


def test_the_build_refuses_clearly_without_the_proto(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("valet_build_elsewhere", SETUP)
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    monkeypatch.setattr(build, "HERE", tmp_path / "a" / "b")
    monkeypatch.delenv("VALET_PROTO_DIR", raising=False)
    with pytest.raises(SystemExit, match="cannot find the Valet proto"):
        build.generate(tmp_path / "out")
