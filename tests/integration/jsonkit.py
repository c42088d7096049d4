"""JSON helpers for the edge tests: exact comparison (a float is not an int, -0.0 is not 0.0)
and documents nested to a chosen depth."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["nested_text", "same_json"]


def same_json(a: Any, b: Any) -> bool:
    """True when `a` and `b` are the same JSON value, types included: 1e20 (a float) differs
    from 100000000000000000000 (an int), -0.0 from 0.0, True from 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


def nested_text(depth: int, leaf: str = "1") -> str:
    """A JSON object nested `depth` objects deep: {"a":{"a":...leaf...}}."""
    return '{"a":' * depth + leaf + "}" * depth
