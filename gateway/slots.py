"""Connection slots: how many connections each user holds on this gateway process, capped.

A slot is taken before a connection joins its session and given back when it leaves (or when
the join fails), so concurrent handshakes of one user cannot overshoot the cap. The cap is per
process: the session actor caps connections per session across every gateway.

Pure bookkeeping: no I/O.
"""

from __future__ import annotations

__all__ = ["ConnectionSlots"]


class ConnectionSlots:
    """Open (or opening) connections per user; `cap` 0 = no cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.held: dict[str, int] = {}

    def take(self, user_id: str) -> bool:
        """Take a slot for one more connection of `user_id`; False when the user is at the cap."""
        n = self.held.get(user_id, 0)
        if self.cap and n >= self.cap:
            return False
        self.held[user_id] = n + 1
        return True

    def give_back(self, user_id: str) -> None:
        n = self.held.get(user_id, 0) - 1
        if n > 0:
            self.held[user_id] = n
        else:
            self.held.pop(user_id, None)
