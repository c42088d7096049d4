"""`sessiond projector` with a fault the test that starts it injects (none of it is in the
product): `--commit-delay-ms`, every round waits this long inside its transaction, before COMMIT
(a wide window for a kill -9 or a SIGSTOP with a transaction open).

Configured as `sessiond projector` is, from the environment (REDIS_URL, DATABASE_URL,
SESSIOND_PARTITIONS, LEASE_TTL_MS, SESSIOND_PROJECTOR_*: `infra.config`):

    python -m tests.integration.faulty_projector --commit-delay-ms 30
"""

from __future__ import annotations

import argparse
import asyncio

from infra.cli import run_async
from infra.commands.projector import serve
from infra.config import load_settings
from infra.logging import setup_logging


async def main(args: argparse.Namespace) -> None:
    settings = load_settings()
    settings.require_redis_url()
    settings.require_database_url()
    config = settings.projector
    delay_s = args.commit_delay_ms / 1000

    async def before_commit() -> None:
        await asyncio.sleep(delay_s)

    await serve(config, before_commit=before_commit if delay_s else None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit-delay-ms", type=int, default=0)
    setup_logging("INFO", service="projector")
    run_async(main, parser.parse_args())
