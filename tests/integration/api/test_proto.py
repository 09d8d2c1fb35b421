"""The checked-in gRPC stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = "orchestrator_api/v1"
GENERATED = ("orchestrator_pb2.py", "orchestrator_pb2.pyi", "orchestrator_pb2_grpc.py")


def test_stubs_are_up_to_date(tmp_path: Path) -> None:
    status = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{Path(protoc.__file__).parent / '_proto'}",
                         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                         str(ROOT / "proto" / PACKAGE / "orchestrator.proto")])
    assert status == 0
    for name in GENERATED:
        fresh = (tmp_path / PACKAGE / name).read_text()
        checked_in = (ROOT / "proto" / PACKAGE / name).read_text()
        assert fresh == checked_in, f"proto/{PACKAGE}/{name} is stale: run `make proto`"
