"""Generate the gRPC Python code from `sessiond.proto` (`make proto`).

The generated modules (`sessiond_pb2.py`, `sessiond_pb2.pyi`, `sessiond_pb2_grpc.py`) are
committed, so that the gateway's image needs no code generator (grpcio-tools is a dev
dependency); `tests/unit/test_grpc_codegen.py` regenerates them into a temporary directory and
fails when they differ from the committed ones, so an edit of the `.proto` without `make proto`
cannot land.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["GENERATED", "PROTO", "ROOT", "generate", "main"]

ROOT = Path(__file__).resolve().parents[2]
#: The proto, relative to the repository root (its path is the generated modules' import path).
PROTO = "gateway/grpc/sessiond.proto"
#: The files protoc writes next to the proto.
GENERATED = ("sessiond_pb2.py", "sessiond_pb2.pyi", "sessiond_pb2_grpc.py")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpcio-tools) on the proto, writing under `out_dir` (as under the root)."""
    from grpc_tools import protoc  # dev only: the image runs the committed code

    out = str(out_dir)
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return [out_dir / Path(PROTO).parent / name for name in GENERATED]


def main() -> int:
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
