"""Subcommands of the `sessiond` CLI, one module each, discovered by `infra.cli`.

A module here defines ``register(subparsers) -> None`` which adds its subcommand(s) with
``subparsers.add_parser(name, help="one line for the command list", description="...")`` and
``set_defaults(handler=fn)``. The handler takes the parsed ``argparse.Namespace`` and returns an
exit code (or None for 0); it may be ``async def`` (run on asyncio, with uvloop when installed).
Raise `events.errors.SessiondError` for expected failures: the CLI prints one line and exits 2.
"""
