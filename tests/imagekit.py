"""The container image's files read as Docker reads them, for the tests that check the image
without a container engine: the Dockerfile's stages (BuildKit's own parser, the `dockerfile`
package), the build context that .dockerignore leaves, and the Procfile's processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import dockerfile

__all__ = [
    "ROOT",
    "Stage",
    "files_under",
    "flag",
    "in_context",
    "parsed",
    "pattern_regex",
    "procfile",
    "stages",
]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stage:
    """One `FROM` of the Dockerfile and the instructions after it."""

    name: str
    base: str
    commands: list[dockerfile.Command] = field(default_factory=list)

    def all(self, cmd: str) -> list[dockerfile.Command]:
        return [c for c in self.commands if c.cmd == cmd]


def parsed() -> tuple[dockerfile.Command, ...]:
    """The Dockerfile's instructions, parsed by BuildKit's parser (what `docker build` reads)."""
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def stages() -> list[Stage]:
    """The Dockerfile's build stages, in order."""
    found: list[Stage] = []
    for command in parsed():
        if command.cmd == "FROM":
            words = command.value
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(found))
            found.append(Stage(name, words[0]))
        elif found:
            found[-1].commands.append(command)
    return found


def flag(command: dockerfile.Command, name: str) -> str | None:
    """The value of an instruction's `--name=value` flag (`COPY --from=build`), if given."""
    for item in command.flags:
        key, _, value = item.partition("=")
        if key == f"--{name}":
            return value
    return None


def procfile() -> dict[str, list[str]]:
    """Procfile process name -> its command's words: what compose and Kubernetes must run."""
    processes = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes[name.strip()] = command.split()
    return processes


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it (Go's filepath.Match, plus `**` for any number
    of directories)."""
    out, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if ch == "*":
            out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(ch)
        i += 1
    return re.compile(out + "$")


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        path = line[1:].strip() if keep else line
        path = re.sub(r"/+", "/", path).strip("/")
        rules.append((keep, pattern_regex(path)))
    return rules


def in_context(relpath: str) -> bool:
    """Whether `relpath` reaches the build context: the last rule that matches the path or one of
    its parent directories decides, as in Docker."""
    parts = relpath.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for keep, regex in _dockerignore():
        if any(regex.match(c) for c in candidates):
            included = keep
    return included


def files_under(path: Path) -> list[str]:
    """The files below `path`, relative to the checkout, without Python's caches."""
    return sorted(
        str(p.relative_to(ROOT))
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )
