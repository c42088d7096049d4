"""What the projected tables must equal: a fold of every partition log, in memory
(`sessiond projections verify`, and the tests)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from events.codec import decode_event, decode_event_envelope
from infra.store import START, Store
from projections.model import Model

__all__ = ["fold_logs", "log_length"]

#: Log entries read per page.
_PAGE = 5000


async def fold_logs(
    store: Store,
    skip: Collection[tuple[int, str]] = (),
    on_progress: Callable[[int], None] | None = None,
) -> Model:
    """The read model as a fold of every partition log of `store`, in memory (what the tables
    must equal). `skip` names log entries (partition, position) to leave out: the projector's
    dead letters, which it recorded instead of projecting. `on_progress(n)` hears of every
    page of n entries folded."""
    model = Model()
    for p in range(store.partitions):
        last = START
        while entries := await store.log.range(p, after=last, count=_PAGE):
            for position, payload in entries:
                last = position
                if (p, position) in skip:
                    continue
                env = decode_event_envelope(payload)
                model.apply(env, decode_event(env.data, env.type))
            if on_progress is not None:
                on_progress(len(entries))
    return model


async def log_length(store: Store) -> int:
    """Entries every partition log of `store` holds now."""
    return sum([await store.log.length(p) for p in range(store.partitions)])
