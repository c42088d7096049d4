"""Base classes every command and event shares.

Time arrives *with* the message (`at`, ms since the epoch) so that deciders never read a clock:
replaying the same messages always gives the same state.
"""

from __future__ import annotations

import msgspec

__all__ = ["Command", "Event"]


class Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """A request to an actor. `user_id` is who asks ("" = the system itself: timers, reactors);
    `admin` says the asker holds the admin role. The deciders authorize with both: a user
    reaches only their own sessions and simulators, an admin reaches every one. (The field is
    keyword-only and stored by name, so older commands without it decode as not admin.)"""

    at: int
    user_id: str = ""
    admin: bool = False


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """A fact an actor recorded at `at`."""

    at: int
