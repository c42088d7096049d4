"""When `sessiond dev` restarts a process or an embedded server that exited (pure: no clock read,
no I/O; the caller passes the time).

A process that exits is restarted after a delay that starts at `first` and doubles at each exit
up to `cap`; a process that stayed up `stable_s` starts from `first` again. `loop_exits` exits
within `loop_window_s` is a crash loop: it is reported once, in one line, and restarts go on at
the capped delay (like Kubernetes' CrashLoopBackOff: a process that fails because a dependency
is away comes back by itself when the dependency does, and nobody has to restart the stack).
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass

__all__ = ["RestartPolicy", "Verdict", "describe_exit"]


@dataclass(frozen=True)
class Verdict:
    """What to do about one exit: restart after `delay` seconds; `crash_loop` is true on the exit
    that makes the process a crash loop (once per loop), with `exits` in the window."""

    delay: float
    crash_loop: bool
    exits: int


class RestartPolicy:
    """The restart schedule of one supervised process (see the module docstring)."""

    def __init__(
        self,
        first: float = 0.5,
        cap: float = 10.0,
        stable_s: float = 30.0,
        loop_exits: int = 5,
        loop_window_s: float = 60.0,
    ) -> None:
        self.first = first
        self.cap = cap
        self.stable_s = stable_s
        self.loop_exits = loop_exits
        self.loop_window_s = loop_window_s
        self._delay = first
        self._exits: deque[float] = deque()
        self.looping = False

    def exited(self, now: float, ran_s: float) -> Verdict:
        """The process exited at `now` after running `ran_s` seconds."""
        if ran_s >= self.stable_s:
            self._delay = self.first
            self.looping = False
        self._exits.append(now)
        while self._exits and self._exits[0] < now - self.loop_window_s:
            self._exits.popleft()
        delay = self._delay
        self._delay = min(self.cap, self._delay * 2)
        entered = not self.looping and len(self._exits) >= self.loop_exits
        if entered:
            self.looping = True
        return Verdict(delay=delay, crash_loop=entered, exits=len(self._exits))


def describe_exit(returncode: int) -> str:
    """`exited with code 2`, `killed by SIGKILL` (Popen's negative return code is a signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with code {returncode}"
