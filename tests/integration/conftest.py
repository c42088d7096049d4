"""Fixtures of the integration tests: `stack`, a real sessiond stack shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.gwstack import Stack, running_stack


@pytest.fixture(scope="module")
def stack(redis_server_url: str, postgres_server_url: str, tmp_path_factory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("gw-logs")  # pytest keeps the last few runs', no more
    with running_stack(redis_server_url, postgres_server_url, logs) as s:
        yield s
