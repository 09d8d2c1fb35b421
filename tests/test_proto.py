"""The checked-in gRPC stubs are exactly what `make proto` generates from proto/."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("orchestrator_pb2.py", "orchestrator_pb2.pyi", "orchestrator_pb2_grpc.py")


def test_stubs_are_up_to_date(tmp_path: Path):
    status = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{Path(protoc.__file__).parent / '_proto'}",
                         f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
                         str(ROOT / "proto/orchestrator/v1/orchestrator.proto")])
    assert status == 0
    for name in GENERATED:
        fresh = (tmp_path / "orchestrator/v1" / name).read_text()
        checked_in = (ROOT / "orchestrator/v1" / name).read_text()
        assert fresh == checked_in, f"orchestrator/v1/{name} is stale: run `make proto`"
