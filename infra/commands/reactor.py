"""`sessiond reactor`: provision and remove exchange simulators as their actors ask (Procfile).

Consumes the simulator events of every partition log with the consumer group `reactor`,
provisions through the configured provisioner (SIMULATOR_PROVISIONER: local | kubernetes,
behind a circuit breaker with retries and backoff) and reports back with commands. Several
reactors may run: they share the entries of the group. SIGTERM/SIGINT: finish what is in
flight, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from infra.cli import add_knob_option, add_store_options

__all__ = ["register", "run"]

log = logging.getLogger("sessiond.reactor")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reactor",
        help="provision / remove exchange simulators for the simulator actors",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_options(p, metrics=True)
    p.add_argument(
        "--name",
        default=None,
        help="consumer name in the `reactor` group (default: reactor-<host>-<pid>)",
    )
    add_knob_option(
        p,
        "--provisioner",
        "simulators.provisioner",
        metavar="{local,kubernetes}",
        help="where simulators run (default: $SIMULATOR_PROVISIONER or local)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="simulators provisioned or removed at once (default 64)",
    )
    p.set_defaults(handler=run)


async def run(args: argparse.Namespace) -> int:
    from events.errors import SessiondError
    from infra.backoff import wait_until_up
    from infra.preflight import check_redis
    from infra.probe import answers, probe_server
    from infra.provisioners import create_provisioner
    from infra.store import open_store

    settings = args.settings
    url, partitions, sim = settings.require_redis_url(), settings.partitions, settings.simulators
    store = open_store(url, partitions)
    try:
        await wait_until_up("Redis", lambda: check_redis(store, settings.env), log)
        provisioner = create_provisioner(sim, store.simulator_hosts)
    except SessiondError:
        await store.aclose()
        raise
    except Exception as exc:  # e.g. no kubeconfig
        await store.aclose()
        raise SessiondError(f"cannot set up the {sim.provisioner} provisioner: {exc}") from None
    # Redis may be down or not started yet: wait for it rather than exit (infra.backoff)
    await wait_until_up("Redis", store.ping, log)
    checks = {"redis": answers(store.ping), "provisioner": provisioner.health_check}
    async with probe_server(settings.metrics_addr, checks, partitions=partitions):
        return await _serve(args, store, provisioner)


async def _serve(args: argparse.Namespace, store: Any, provisioner: Any) -> int:
    from actors.reactor import Reactor
    from infra.backoff import wait_until_up

    settings = args.settings
    partitions, sim = settings.partitions, settings.simulators
    bus = store.command_sender(name=args.name)
    await wait_until_up("Redis", bus.start, log)
    reactor = Reactor(store, bus, provisioner, name=args.name, concurrency=args.concurrency)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, reactor.stop)
    log.info(
        "reactor %s starting: %s provisioner, %d partitions",
        reactor.name,
        sim.provisioner,
        partitions,
    )
    try:
        await reactor.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await reactor.close()
        await bus.close()
        await store.aclose()
    log.info("reactor %s stopped; handled %d simulator events", reactor.name, reactor.handled)
    return 0
