"""The README is a user's document of at most 300 lines, and the documentation stays inside the
repository: every relative link of README.md and docs/*.md names a file (and heading) that exists,
and nothing links out, since a reader of a checkout (or of the image's package) may have no
network and pages elsewhere drift from the code. Loopback URLs (the gateway `make run` starts)
are examples, not links out. docs/configuration.md names every variable the loader reads."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from infra.knobs import EXTRA_VARIABLES, KNOBS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 300
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target "title") and ![alt](target); the text may hold one level of brackets
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTOLINK = re.compile(r"<([a-z][a-z0-9+.-]*:[^>\s]+)>", re.I)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$", re.M)
URL = re.compile(r"\bhttps?://[^\s)>\]`\"']+", re.I)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def _prose(text: str) -> str:
    """The text without code: a link inside code is an example, not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _links(page: Path) -> list[str]:
    prose = _prose(page.read_text())
    return LINK.findall(prose) + AUTOLINK.findall(prose) + REFERENCE.findall(prose)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", page.read_text()).splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = _slug(match.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK


def test_the_readme_is_at_most_300_lines() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; details belong in docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_names_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in _links(page):
        if SCHEME.match(target) or target.startswith("//"):
            continue  # links out: the next test
        path, _, anchor = target.partition("#")
        file = (page.parent / unquote(path)).resolve() if path else page
        if not file.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no such heading in {file.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_link_or_url_leads_outside_the_repository(page: Path) -> None:
    outside = [
        t
        for t in _links(page)
        if (SCHEME.match(t) or t.startswith("//")) and not (URL.match(t) and _is_loopback(t))
    ]
    outside += [u for u in URL.findall(page.read_text()) if not _is_loopback(u)]
    assert not outside, f"{page.relative_to(ROOT)} leads outside the repository: {outside}"


def test_the_configuration_page_names_every_variable_the_loader_reads() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    variables = {name for knob in KNOBS for name in knob.names}
    variables |= {name for names in EXTRA_VARIABLES.values() for name in names}
    missing = sorted(v for v in variables if f"`{v}`" not in page)
    assert not missing, f"docs/configuration.md does not list {missing}"


def test_the_link_checker_sees_what_it_must() -> None:
    """The checks above would pass on a page whose links the patterns miss: hold them to
    examples of each form, including the ones they must not take for links."""
    text = (
        "[a](architecture.md#actors) ![b](images/c.png) <http://127.0.0.1:8080/health>\n"
        "[d][e] `[f](g.md)`\n\n[e]: protocol.md\n\n```\n[h](i.md)\n```\n"
    )
    prose = _prose(text)
    assert LINK.findall(prose) == ["architecture.md#actors", "images/c.png"]
    assert AUTOLINK.findall(prose) == ["http://127.0.0.1:8080/health"]
    assert REFERENCE.findall(prose) == ["protocol.md"]
    assert _is_loopback("http://localhost:8080/x") and not _is_loopback("https://example.com")
    assert _slug("The gateway's internals (`gateway/`, `sessiond gateway`)") == (
        "the-gateways-internals-gateway-sessiond-gateway"
    )
