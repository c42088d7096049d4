"""The TypeScript client (clients/typescript) against a real gateway: its Node tests and its
browser tests in Debian's headless Chromium. Node/npm and Chromium come from tests/browserkit.py
(installed from Debian as root when missing; skipped elsewhere, naming the package)."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth import Claims
from tests.browserkit import NodeTools, chromium_path, node_tools, npm_ci, npm_run
from tests.integration.gwstack import ROOT, Stack, free_port, running_stack

__all__ = ["chromium_path", "node_tools"]

PACKAGE = ROOT / "clients" / "typescript"


@pytest.fixture(scope="module")
def built_client(node_tools: NodeTools) -> NodeTools:
    """The client's locked dev dependencies installed and the client built (dist/)."""
    npm_ci(node_tools, PACKAGE)
    done = npm_run(node_tools, PACKAGE, "build")
    assert done.returncode == 0, done.stdout + done.stderr
    return node_tools


@pytest.fixture(scope="module")
def page_port() -> int:
    """The port of the test page's static server: its origin is in the gateway's allow-list."""
    return free_port()


@pytest.fixture(scope="module")
def ts_stack(
    redis_server_url: str, postgres_server_url: str, tmp_path_factory, page_port: int
) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("ts-logs")
    with running_stack(
        redis_server_url, postgres_server_url, logs, ALLOWED_ORIGINS=f"http://127.0.0.1:{page_port}"
    ) as s:
        yield s


def _node_test(
    tools: NodeTools, stack: Stack, user: str, script: str, **env: str
) -> tuple[int, str]:
    """Run one `node --test` file of the client against `stack`; the pass / fail / skip counts
    are checked by the caller, so a skipped test cannot pass for a run one."""
    done = subprocess.run(
        [tools.node, "--test", "--test-reporter=spec", f"test/{script}"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**stack.env, "SESSIOND_URL": stack.base, "SESSIOND_TOKEN_A": stack.token(user), **env},
    )
    return done.returncode, done.stdout + done.stderr


def _counts(output: str) -> dict[str, int]:
    return {
        k: int(v)
        for k, v in re.findall(r"^\S*\s*(pass|fail|skipped|cancelled) (\d+)$", output, re.M)
    }


def test_the_client_works_against_a_real_gateway_from_node(
    built_client: NodeTools, ts_stack: Stack
) -> None:
    code, out = _node_test(built_client, ts_stack, "ts-alice", "node.test.mjs")
    counts = _counts(out)
    assert code == 0, out
    assert counts.get("fail") == 0 and counts.get("skipped") == 0, out
    assert counts.get("pass", 0) >= 10, out


def test_the_client_works_in_headless_chromium(
    built_client: NodeTools, chromium_path: str, ts_stack: Stack, page_port: int
) -> None:
    expired_sid = str(uuid.uuid4())
    code, out = _node_test(
        built_client,
        ts_stack,
        "ts-bob",
        "browser.test.mjs",
        SESSIOND_STATIC_PORT=str(page_port),
        SESSIOND_CHROMIUM=chromium_path,
        SESSIOND_EXPIRED_TICKET=ts_stack.tokens.issue_ticket(
            Claims("ts-bob"), expired_sid, ttl_s=-3600
        ),
        SESSIOND_EXPIRED_TICKET_SID=expired_sid,
    )
    counts = _counts(out)
    assert code == 0, out
    assert counts.get("fail") == 0 and counts.get("skipped") == 0, out
    assert counts.get("pass", 0) >= 4, out


def test_the_client_package_is_committed_with_its_lock_file_and_no_build_output() -> None:
    """`npm ci` needs the lock file; dist/ is built by the tests, never committed."""
    assert (PACKAGE / "package-lock.json").is_file()
    assert not any(Path(PACKAGE / "src").glob("*.js"))
