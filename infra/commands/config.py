"""`sessiond config`: the effective configuration, every knob of every section, and its source.

Shows what a sessiond process started from this environment would run with: the shared values,
then the gateway, runtime, projector and simulators sections. Each value says where it came
from: the environment variable that set it, "default", or "derived from X" (another knob, or a
running `sessiond dev`). Secrets are masked (JWT secrets and private key, passwords inside URLs).
An invalid environment is reported as every command reports it: one line naming each bad
variable, exit code 2.

Examples:
  sessiond config
  sessiond config --output json | jq .gateway.port
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register", "render_json", "render_text", "run"]

#: Longer values are cut in the text output (PEM keys, a simulator spec); JSON has them whole.
_TEXT_WIDTH = 60
#: The column of the sources in the text output (longer values push their source right).
_VALUE_COLUMN = 36


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "config",
        help="print the effective configuration (secrets masked) and where each value came from",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--output",
        choices=["text", "json"],
        default="text",
        help="text (default: one `knob = value  # source` line each) or json",
    )
    p.set_defaults(handler=run)


def render_json(entries: list[Any]) -> dict[str, Any]:
    """Shared knobs at the top level, each section an object: knob -> value, source, variables."""
    doc: dict[str, Any] = {}
    for e in entries:
        section, _, name = e.path.rpartition(".")
        target = doc.setdefault(section, {}) if section else doc
        target[name] = {"value": e.value, "source": e.source, "variables": list(e.variables)}
    return doc


def _text_value(value: Any) -> str:
    import msgspec

    text = msgspec.json.encode(value).decode()
    return text if len(text) <= _TEXT_WIDTH else text[: _TEXT_WIDTH - 5] + f"...({len(text)})"


def render_text(entries: list[Any]) -> str:
    """TOML-like: the shared knobs, then one ``[section]`` block each; sources as comments."""
    lines = ["# effective configuration (secrets masked); after #: where each value came from"]
    width = max(len(e.path.rpartition(".")[2]) for e in entries)
    current = ""
    for e in entries:
        section, _, name = e.path.rpartition(".")
        if section != current:
            lines += ["", f"[{section}]"]
            current = section
        value = _text_value(e.value)
        lines.append(f"{name:<{width}} = {value:<{_VALUE_COLUMN}}  # {e.source}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    from infra.cli import emit_json
    from infra.config import describe

    entries = describe(args.settings)
    if args.output == "json":
        emit_json(render_json(entries))
    else:
        sys.stdout.write(render_text(entries))
    return 0
