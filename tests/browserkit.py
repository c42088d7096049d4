"""Node.js, npm and headless Chromium for the tests that need them (the TypeScript client, the
admin console): found on the machine, installed from Debian's packages when missing and the
tests run as root (CI does), or else the test is skipped with a message naming the package.

Use the fixtures (`node_tools`, `chromium_path`) or the functions behind them; `npm_ci(dir)`
installs a package's locked dependencies (offline from the npm cache when it has them, from the
registry otherwise) only when its `package-lock.json` changed since the last install;
`chromium_args(profile)` are the flags Chromium needs on these machines (headless, no sandbox
as root, no background network: the closed network refuses those connections).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = [
    "CHROMIUM_FLAGS",
    "NODE_MIN_MAJOR",
    "NodeTools",
    "chromium_args",
    "chromium_path",
    "find_chromium",
    "find_node",
    "install_debian",
    "node_tools",
    "npm_ci",
    "npm_run",
]

#: playwright-core and the client's dev tools need Node.js 20 or newer.
NODE_MIN_MAJOR = 20
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
_APT_UPDATED = False


@dataclass(frozen=True)
class NodeTools:
    node: str
    npm: str
    version: str


def install_debian(*packages: str) -> bool:
    """`apt-get install -y packages` when running as root with apt; False when it cannot."""
    global _APT_UPDATED
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]  # another process may be installing too
    if not _APT_UPDATED:
        subprocess.run(
            ["apt-get", *lock, "update", "-qq"],
            env=env,
            check=False,
            capture_output=True,
            timeout=600,
        )
        _APT_UPDATED = True
    done = subprocess.run(
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *packages],
        env=env,
        check=False,
        capture_output=True,
        timeout=1200,
    )
    return done.returncode == 0


def _node_version(node: str) -> str:
    out = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def find_node() -> NodeTools | str:
    """Node.js and npm (installed from Debian's `nodejs` and `npm` if missing and root), or the
    reason they cannot be had."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        install_debian("nodejs", "npm")
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "Node.js and npm are not installed (Debian packages `nodejs` and `npm`)"
    version = _node_version(node)
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        return f"`node --version` printed {version!r}"
    if major < NODE_MIN_MAJOR:
        return f"Node.js {version} is older than {NODE_MIN_MAJOR} (package `nodejs`)"
    return NodeTools(node=node, npm=npm, version=version)


def find_chromium() -> str | None:
    """Debian's Chromium (installed with `chromium-driver` if missing and root), or None."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    install_debian("chromium", "chromium-driver")
    return shutil.which("chromium")


def chromium_args(profile_dir: Path) -> list[str]:
    """Chromium's command-line flags with a new empty profile in `profile_dir`."""
    return [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"]


def npm_ci(tools: NodeTools, package_dir: Path) -> None:
    """`npm ci` from the lock file when node_modules does not match it yet. `--prefer-offline`
    takes what the npm cache has without asking the registry, and fetches only the rest."""
    lock = package_dir / "package-lock.json"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    stamp = package_dir / "node_modules" / ".sessiond-lock-sha256"
    if stamp.exists() and stamp.read_text() == digest:
        return
    subprocess.run(
        [tools.npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=package_dir,
        check=True,
        timeout=600,
    )
    stamp.write_text(digest)


def npm_run(
    tools: NodeTools,
    package_dir: Path,
    script: str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`npm run <script> -- args` in `package_dir`, its output captured."""
    cmd = [tools.npm, "run", "--silent", script]
    if args:
        cmd += ["--", *args]
    return subprocess.run(
        cmd,
        cwd=package_dir,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    found = find_node()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("Chromium is not installed (Debian packages `chromium` and `chromium-driver`)")
    return path
