"""The committed gRPC stubs are what the committed .proto files generate (run `make proto`)."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto").rglob("*.proto"))
    include = str(Path(protoc.__file__).parent / "_proto")
    code = protoc.main(
        [
            "protoc",
            f"-I{REPO / 'proto'}",
            f"-I{include}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *protos,
        ]
    )
    assert code == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc generated nothing"
    for relative in generated:
        committed = REPO / "operator" / relative
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_text() == (tmp_path / relative).read_text(), (
            f"{committed} is stale: run `make proto`"
        )
