"""The documentation's client examples run, as printed, against a real stack (only the
addresses are changed to the stack's), so they cannot rot: the Python client's block in the
README's "Connect a client" and the gRPC block in docs/clients.md."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.integration.gwstack import ROOT, Stack


def example(marker: str, page: str = "README.md") -> str:
    """The code block that follows `<!-- {marker}: ... -->` in `page`."""
    text = (ROOT / page).read_text()
    found = re.search(rf"<!-- {marker}:[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert found, f"no {marker} block in {page}"
    return found.group(1)


def run(stack: Stack, code: str, user: str) -> str:
    code = code.replace("127.0.0.1:8080", f"127.0.0.1:{stack.port}")
    code = code.replace("127.0.0.1:50051", stack.grpc_target)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**stack.env, "TOKEN": stack.token(user)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.timeout(90)
def test_the_python_client_example_runs(stack: Stack) -> None:
    out = run(stack, example("client-example"), "alice")
    lines = out.splitlines()
    assert lines[0].startswith("Success: SessionStarted(session_id="), out
    assert re.search(r"^\d+ state_update StateChanged$", out, re.M), out
    assert lines[-1] == "Success: Message(message='Session ended')", out


@pytest.mark.timeout(90)
def test_the_grpc_example_runs(stack: Stack) -> None:
    out = run(stack, example("grpc-example", "docs/clients.md"), "alice")
    assert re.search(r'^\d+ state_update \{.*"theme":"dark"', out, re.M), out
