"""Large bodies are stored compressed (seed 004's snapshot compression, issue 14 item 6)."""

from __future__ import annotations

import random
import string

import msgspec

from events.codec import COMPRESS_ABOVE, decode_event, deflate, encode, inflate
from events.envelope import EventEnvelope
from events.session import StateReplaced
from projections.projector import decode_entries


def state_of(kib: int, seed: int = 14) -> dict:
    """A state like an app's: many small records of words and numbers, about `kib` KiB."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(400)]
    state, size, i = {}, 0, 0
    while size < kib * 1024:
        record = {
            "title": " ".join(rng.choices(words, k=6)),
            "score": rng.randint(0, 10_000),
            "done": rng.random() < 0.5,
            "tags": rng.choices(words, k=3),
        }
        state[f"item-{i}"] = record
        size += len(msgspec.json.encode(record)) + 12
        i += 1
    return state


def test_a_large_event_body_is_stored_compressed_and_decodes_unchanged() -> None:
    event = StateReplaced(at=1, state=state_of(200), state_version=3)
    body = encode(event)
    stored = deflate(body)
    assert len(stored) < len(body) / 2
    assert decode_event(stored, "StateReplaced") == event
    assert decode_event(msgspec.Raw(stored), "StateReplaced") == event


def test_a_small_body_is_stored_as_it_is() -> None:
    body = encode(StateReplaced(at=1, state={"a": 1}, state_version=1))
    assert len(body) <= COMPRESS_ABOVE and deflate(body) is body and inflate(body) is body


def test_the_projector_reads_a_compressed_body_in_the_log() -> None:
    event = StateReplaced(at=1, state=state_of(64), state_version=1)
    env = EventEnvelope(
        event_id="e",
        actor_id="session:s",
        version=2,
        partition=0,
        ts=1,
        command_id="c",
        correlation_id="c",
        causation_id="c",
        type="StateReplaced",
        data=msgspec.Raw(deflate(encode(event))),
    )
    ((position, decoded_env, decoded),) = decode_entries([("1-0", encode(env))])
    assert position == "1-0" and decoded_env.version == 2 and decoded == event
