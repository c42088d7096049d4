"""`sessiond simulators`: run reference exchange engines, one asyncio task per simulator.

Default (SIMULATOR_PROVISIONER=local): a shared host. It registers itself in the event store and
runs the simulators the reactor places on it; ticks go to each simulator's capped tick stream,
heartbeats to the simulator actors. `--single` (used by the Kubernetes Deployment of one
simulator): run the one simulator described by $SIMULATOR_SPEC (JSON) and serve `/health` and
`/ready` on --health-port for the probes. SIGTERM/SIGINT: stop the engines, deregister, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from infra.cli import add_knob_option, add_store_options

__all__ = ["register", "run"]

log = logging.getLogger("sessiond.simulators")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "simulators",
        help="run the reference exchange engines (the `simulators` process)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--host-id",
        default=None,
        help="this process's name in the store (default: <hostname>-<pid>)",
    )
    add_store_options(p, metrics=True)
    add_knob_option(
        p,
        "--tick-hz",
        "simulators.tick_hz",
        metavar="HZ",
        help="ticks per second per simulator (default: $SIMULATOR_TICK_HZ or 10)",
    )
    add_knob_option(
        p,
        "--heartbeat-ms",
        "simulators.heartbeat_interval_ms",
        metavar="MS",
        help="heartbeat interval (default: $SIMULATOR_HEARTBEAT_INTERVAL_MS or 5000)",
    )
    p.add_argument(
        "--single",
        action="store_true",
        help="run only the simulator in $SIMULATOR_SPEC (Kubernetes pod mode)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=8081,
        help="with --single: port of /health and /ready (default 8081)",
    )
    p.set_defaults(handler=run)


async def _serve_health(port: int, ready: asyncio.Event) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            path = line.split(b" ")[1] if line.count(b" ") >= 2 else b"/"
            ok = path == b"/health" or (path == b"/ready" and ready.is_set())
            body = b"ok\n" if ok else b"not ready\n"
            status = b"200 OK" if ok else b"503 Service Unavailable"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        finally:
            writer.close()

    return await asyncio.start_server(answer, "0.0.0.0", port)


async def run(args: argparse.Namespace) -> int:
    import msgspec

    from events.errors import SessiondError
    from infra.backoff import wait_until_up
    from infra.exchange.control import EngineSpec
    from infra.exchange.engine import Engine
    from infra.exchange.host import SimulatorHost, bus_heartbeat, bus_stop
    from infra.preflight import check_redis
    from infra.probe import answers, probe_server
    from infra.store import open_store

    settings = args.settings
    url, partitions, sim = settings.require_redis_url(), settings.partitions, settings.simulators
    tick_hz = sim.tick_hz
    heartbeat_s = sim.heartbeat_interval_ms / 1000
    store = open_store(url, partitions)
    try:
        await check_redis(store, settings.env)
    except BaseException:
        await store.aclose()
        raise
    bus = store.commands
    # Redis may be down or not started yet: wait for it rather than exit (infra.backoff)
    await wait_until_up("Redis", store.ping, log)
    await wait_until_up("Redis", bus.start, log)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        if args.single:
            try:
                spec = msgspec.json.decode(sim.spec, type=EngineSpec)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise SessiondError(f"--single needs a valid $SIMULATOR_SPEC: {exc}") from None
            host = SimulatorHost(
                store,
                bus_heartbeat(bus),
                host_id=args.host_id,
                tick_hz=tick_hz,
                heartbeat_interval_s=heartbeat_s,
                md_maxlen=sim.md_maxlen,
            )
            ready = asyncio.Event()
            checks = {"redis": answers(store.ping)}
            async with probe_server(settings.metrics_addr, checks, partitions=partitions):
                server = await _serve_health(args.health_port, ready)
                publisher = asyncio.create_task(host.publisher.run())
                engine = Engine(
                    spec,
                    publisher=host.publisher,
                    heartbeat=bus_heartbeat(bus),
                    tick_hz=tick_hz,
                    heartbeat_interval_s=heartbeat_s,
                )
                await store.ping()
                ready.set()
                task = asyncio.create_task(engine.run())
                await asyncio.wait(
                    [task, asyncio.create_task(stopping.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                for t in (task, publisher):
                    t.cancel()
                await asyncio.gather(task, publisher, return_exceptions=True)
                server.close()
        else:
            host = SimulatorHost(
                store,
                bus_heartbeat(bus),
                host_id=args.host_id,
                tick_hz=tick_hz,
                heartbeat_interval_s=heartbeat_s,
                register_ttl_s=sim.host_ttl_ms / 1000,
                md_maxlen=sim.md_maxlen,
                on_shutdown=bus_stop(bus),
            )
            log.info(
                "simulators host %s up: %g ticks/s per simulator, heartbeat every %gs",
                host.host_id,
                tick_hz,
                heartbeat_s,
            )
            checks = {"redis": answers(store.ping), "host": host.health_check}
            async with probe_server(settings.metrics_addr, checks, partitions=partitions):
                runner = asyncio.create_task(host.run())
                await asyncio.wait(
                    [runner, asyncio.create_task(stopping.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                host.stop()
                await runner
            log.info(
                "simulators host %s stopped (%d ticks published)",
                host.host_id,
                host.publisher.published,
            )
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await store.aclose()
    return 0
