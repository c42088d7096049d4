"""The committed gRPC code is what `make proto` generates from the committed `.proto`."""

from __future__ import annotations

from pathlib import Path

from gateway.grpc.codegen import GENERATED, PROTO, ROOT, generate


def test_the_generated_code_matches_the_proto(tmp_path: Path) -> None:
    written = generate(tmp_path)
    assert [p.name for p in written] == list(GENERATED)
    stale = [
        p.name
        for p in written
        if p.read_bytes() != (ROOT / Path(PROTO).parent / p.name).read_bytes()
    ]
    assert stale == [], f"{stale} differ from {PROTO}: run `make proto` and commit the result"
