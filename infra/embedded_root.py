"""As root, the embedded PostgreSQL runs as a system user of its own (PostgreSQL refuses to run as
root), and that user must reach (traverse every parent directory of) the installation it runs
and the data it writes. A checkout under a private directory (a fresh ``mktemp -d``, ``/root``)
gives it neither: ``initdb`` inside ``.venv`` fails with PermissionError. Opening up the user's
directories (chmod) is not ours to do; instead the server user gets places of its own:

- the installation: used where it is when the server user can run it, else a copy under
  `SHARED_ROOT` (``pginstall-<digest of the postgres binary>``, made once, atomically);
- the data: in the data directory when the server user can reach it, else under
  ``SHARED_ROOT/data/<digest of the data directory's path>``, recorded in the data directory
  (`RECORD`) so that a restart finds the same data. The record is the truth: a relocated
  directory whose record is gone (``make clean-data``) is replaced by a fresh one, and one whose
  data directory no longer exists (the checkout was deleted) is removed by the next relocation.

`SHARED_ROOT` must belong to root and be writable by nobody else. The lock, the log and the
record stay in the data directory; only the server's own files move.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from events.errors import SessiondError

__all__ = [
    "RECORD",
    "SHARED_ROOT",
    "EmbeddedServerError",
    "can_reach",
    "reachable_install",
    "server_home",
]

#: Where root keeps what the server user must reach (installation copies, relocated data).
SHARED_ROOT = Path("/var/lib/sessiond/embedded-postgres")
#: The file in a data directory naming where its PostgreSQL data lives instead.
RECORD = "pg.location"
_ORIGIN = "origin"  # in a relocated directory: the data directory it belongs to


class EmbeddedServerError(SessiondError):
    """An embedded dev/test server could not be started (binary missing, dir in use, crash)."""

    code = "EMBEDDED_SERVER"


def can_reach(owner: tuple[int, int], *argv: str) -> bool:
    """Whether `argv` succeeds when run as the server user `owner` (uid, gid): the honest test
    of what that user can execute or traverse (modes, ACLs, mounts)."""
    try:
        done = subprocess.run(
            argv, user=owner[0], group=owner[1], extra_groups=[], cwd="/",
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            check=False, timeout=30,
        )  # fmt: skip
    except OSError:  # the program itself cannot be reached
        return False
    return done.returncode == 0


def _can_traverse(owner: tuple[int, int], path: Path) -> bool:
    test = shutil.which("test") or "/usr/bin/test"
    return can_reach(owner, test, "-x", str(path))


def _secure_root(shared_root: Path) -> Path:
    """`shared_root`, created if needed (0755), refused unless root owns it and nobody else can
    write to it: what the server user runs from there, root put there."""
    shared_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = shared_root.lstat()
    if shared_root.is_symlink() or st.st_uid != 0 or st.st_mode & 0o022:
        raise EmbeddedServerError(
            f"{shared_root} must be a directory owned by root and writable by root only"
            " (it holds what the embedded PostgreSQL's system user runs)"
        )
    return shared_root


def _user(owner: tuple[int, int]) -> str:
    try:
        return pwd.getpwuid(owner[0]).pw_name
    except KeyError:
        return str(owner[0])


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _parts(install: Path) -> list[tuple[Path, Path]]:
    """What a working copy of `install` needs (source, path in the copy): the installation, and
    the shared libraries a repaired wheel keeps in ``<package>.libs`` beside its package (its
    binaries find them through an $ORIGIN-relative RPATH, so the copy keeps that layout)."""
    package = install.parent
    parts = [(install, Path(package.name) / install.name)]
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        parts.append((libs, Path(libs.name)))
    return parts


def _publish_copy(install: Path, target: Path) -> None:
    """Copy `install` (with its libraries, `_parts`) to `target` atomically (a copy beside it,
    renamed), readable and, where executable, runnable by anyone; a concurrent copy that wins
    the rename is kept."""
    staging = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=target.parent))
    try:
        copy = staging / "copy"
        for source, where in _parts(install):
            shutil.copytree(source, copy / where, symlinks=True)
        for path in (copy, *copy.rglob("*")):
            if path.is_symlink():
                continue
            if path.is_dir():
                path.chmod(0o755)
            else:
                path.chmod(0o755 if path.stat().st_mode & 0o100 else 0o644)
        try:
            os.rename(copy, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def reachable_install(
    install: Path, owner: tuple[int, int], shared_root: Path = SHARED_ROOT
) -> Path:
    """`install` (a PostgreSQL installation: bin/, lib/, share/) if the server user can run its
    `postgres`, else a copy of it under `shared_root` that it can."""
    postgres = install / "bin" / "postgres"
    if can_reach(owner, str(postgres), "-V"):
        return install
    target = _secure_root(shared_root) / f"pginstall-{_digest(postgres.read_bytes())}"
    if not target.is_dir():
        _publish_copy(install, target)
    copy = target / _parts(install)[0][1]
    if not can_reach(owner, str(copy / "bin" / "postgres"), "-V"):
        raise EmbeddedServerError(
            f"the PostgreSQL system user {_user(owner)} cannot run {copy}/bin/postgres"
        )
    return copy


def _prune(data_root: Path) -> None:
    """Remove relocated data whose data directory no longer exists (nothing can use it again:
    a new data directory at that path has no record, and gets a fresh one)."""
    for home in data_root.iterdir():
        origin = home / _ORIGIN
        try:
            gone = not Path(origin.read_text().strip()).exists()
        except OSError:
            continue  # being created right now, or not ours
        if gone:
            shutil.rmtree(home, ignore_errors=True)


def server_home(data_dir: Path, owner: tuple[int, int], shared_root: Path = SHARED_ROOT) -> Path:
    """The directory that holds the server's own files (`data/`, `run/`) for `data_dir` (whose
    lock the caller holds): `data_dir` itself when the server user can reach it, else the
    relocated directory its record names (made, and recorded, on first use)."""
    record = data_dir / RECORD
    if record.exists():
        home = Path(record.read_text().strip())
        home.mkdir(mode=0o755, parents=True, exist_ok=True)  # gone (root wiped it): start anew
        (home / _ORIGIN).write_text(f"{data_dir}\n")
        return home
    if _can_traverse(owner, data_dir):
        return data_dir
    if (data_dir / "data" / "PG_VERSION").exists():
        raise EmbeddedServerError(
            f"{data_dir} holds PostgreSQL data that its system user {_user(owner)} can no longer"
            " reach (a parent directory became private): make the path reachable again, or"
            " remove the data directory to start afresh"
        )
    data_root = _secure_root(shared_root) / "data"
    data_root.mkdir(mode=0o755, exist_ok=True)
    _prune(data_root)
    home = data_root / _digest(str(data_dir).encode())
    if home.exists():  # left by an earlier data directory at this path whose record is gone
        shutil.rmtree(home)
    home.mkdir(mode=0o755)
    (home / _ORIGIN).write_text(f"{data_dir}\n")
    record.write_text(f"{home}\n")
    if not _can_traverse(owner, home):
        raise EmbeddedServerError(f"the PostgreSQL system user {_user(owner)} cannot reach {home}")
    return home
