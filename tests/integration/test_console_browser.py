"""The console in a real browser (Debian's headless Chromium, driven by Selenium through Debian's
`chromium-driver`) against a real stack: sign in, find a session, open it, scrub its timeline
and see the state change, follow new events live, filter, send a broadcast and see it arrive at
a connected WebSocket client, disconnect a device, replay an exported file of 10,000 events in
the virtualised timeline. Each page is saved as a screenshot into a temporary directory, or into
the directory SESSIOND_SCREENSHOTS names: `SESSIOND_SCREENSHOTS=docs/images make test` refreshes
the README's images (a plain test run leaves the checkout untouched)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browserkit import chromium_args, chromium_path  # noqa: F401 (a fixture)
from tests.integration.gwstack import Stack, connect_ws, recv_until

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
_SHOTS = os.environ.get("SESSIOND_SCREENSHOTS") or tempfile.mkdtemp(prefix="console-shots-")
IMAGES = ROOT / _SHOTS  # (an absolute temporary directory stays itself)


@pytest.fixture
def browser(chromium_path: str, tmp_path: Path) -> Iterator[webdriver.Chrome]:  # noqa: F811
    driver_path = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if not Path(driver_path).exists():
        pytest.skip("chromedriver is not installed (Debian package `chromium-driver`)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for arg in chromium_args(tmp_path / "profile"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver, check, timeout: float = 15.0, message: str = ""):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: check(d))
    except TimeoutException:
        raise AssertionError(f"timed out: {message}\n{driver.page_source[:3000]}") from None


def text(driver, css: str) -> str:
    """The element's text, read in one script (the page redraws while the test reads it)."""
    return driver.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", css
    )


def version_shown(driver) -> str:
    return driver.execute_script(
        "const e = document.getElementById('state-head'); return e ? e.dataset.version : ''"
    )


def shot(driver, name: str) -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    time.sleep(0.3)  # let the last paint land
    driver.save_screenshot(str(IMAGES / f"console-{name}.png"))


def state_shown(driver) -> dict:
    raw = text(driver, "#state pre")
    return json.loads(raw) if raw.startswith(("{", "null")) else {}


async def _update(ws, key: str, value) -> None:
    await ws.send(json.dumps({"type": "state_update", "payload": {"key": key, "value": value}}))
    await recv_until(
        ws, lambda m: m["type"] == "state_update" and m["payload"].get("changes") == {key: value}
    )


async def test_an_admin_finds_a_session_travels_in_time_and_broadcasts(
    stack: Stack, browser: webdriver.Chrome
) -> None:
    user = f"alice-{uuid.uuid4().hex[:6]}"
    sid = str(uuid.uuid4())
    ws, hello = await connect_ws(stack, user, "phone", sid)
    assert hello["type"] == "connected", hello
    try:
        for i in range(1, 4):
            await _update(ws, "mood", f"calm-{i}")
        run = asyncio.to_thread
        d = browser

        # --- sign in
        await run(d.get, stack.base + "/admin")
        await run(wait, d, lambda d: d.find_elements(By.ID, "token"), message="login form")
        await run(shot, d, "login")
        d.find_element(By.ID, "token").send_keys(stack.token("root", "admin"))
        d.find_element(By.ID, "sign-in").click()

        # --- find the session by its user
        await run(wait, d, lambda d: d.find_elements(By.ID, "search-user"), message="search")
        d.find_element(By.ID, "search-user").send_keys(user)
        d.find_element(By.ID, "search-go").click()
        link = f'a.session-link[href="#/session/{sid}"]'
        await run(
            wait,
            d,
            lambda d: d.find_elements(By.CSS_SELECTOR, link),
            message="the session in the list",
        )
        await run(shot, d, "sessions")
        d.find_element(By.CSS_SELECTOR, link).click()

        # --- its page: the device online, the live state
        await run(wait, d, lambda d: "calm-3" in text(d, "#live-state"), message="live state")
        assert "phone" in text(d, "#devices") and "online" in text(d, "#devices")
        assert "1 (phone ws)" in text(d, "#connections")
        await run(shot, d, "session")

        # --- time travel: the newest event is selected; every event is on the timeline
        d.find_element(By.ID, "open-travel").click()
        await run(
            wait,
            d,
            lambda d: state_shown(d).get("state", {}).get("state", {}).get("mood") == "calm-3",
            message="the newest state",
        )
        total = int(text(d, "#event-count").split(" of ")[1].split()[0])
        assert total >= 5  # created, the device joined, three changes (and whatever else)
        scrubber = d.find_element(By.ID, "scrubber")
        scrubber.send_keys(Keys.HOME)
        await run(
            wait,
            d,
            lambda d: version_shown(d) == "1",
            message="the first event",
        )
        assert "SessionCreated" in text(d, "#state-head") and "calm" not in text(d, "#state")
        # --- filtered to the state changes, one step back from the newest is calm-2
        Select(d.find_element(By.ID, "filter-type")).select_by_visible_text("StateChanged")
        await run(
            wait,
            d,
            lambda d: text(d, "#event-count") == f"3 of {total} events",
            message="three state changes",
        )
        types = d.execute_script(
            "return [...document.querySelectorAll('.vrow .t')].map((e) => e.textContent)"
        )
        assert set(types) == {"StateChanged"}
        scrubber.send_keys(Keys.END)
        await run(wait, d, lambda d: "calm-3" in text(d, "#state"), message="the last change")
        newest = int(version_shown(d))
        scrubber.send_keys(Keys.ARROW_LEFT)
        await run(
            wait,
            d,
            lambda d: state_shown(d).get("state", {}).get("state", {}).get("mood") == "calm-2",
            message="one step back",
        )
        assert int(version_shown(d)) < newest
        assert "calm-1" in text(d, "#diff") and "calm-2" in text(d, "#diff")
        scrubber.send_keys(Keys.END)
        await run(wait, d, lambda d: "calm-3" in text(d, "#state"), message="back to the end")
        await run(shot, d, "travel")

        # --- live tail: a new change appears and is followed
        await _update(ws, "mood", "focused")
        await run(
            wait,
            d,
            lambda d: state_shown(d).get("state", {}).get("state", {}).get("mood") == "focused",
            message="the live tail",
        )
        assert text(d, "#event-count").startswith("4 of")

        # --- live charts and a broadcast that reaches the WebSocket client
        await run(d.get, stack.base + "/admin#/live")
        await run(wait, d, lambda d: "gateway" in text(d, "#gateway-id"), message="stats")
        message = f"maintenance {uuid.uuid4().hex[:6]}"
        d.find_element(By.ID, "broadcast-message").send_keys(message)
        d.find_element(By.ID, "broadcast-send").click()
        got = await recv_until(ws, lambda m: m["type"] == "broadcast")
        assert got["payload"]["message"] == message
        await run(wait, d, lambda d: "sent to" in text(d, "#broadcast-result"), message="sent")
        for i in range(12):  # some traffic on the charts (a sample a second)
            await _update(ws, "breath", i)
            await asyncio.sleep(0.4)
        await run(shot, d, "live")

        # --- disconnect the device from its page: the client's connection is closed
        await run(d.get, stack.base + f"/admin#/session/{sid}")
        await run(
            wait,
            d,
            lambda d: d.find_elements(By.CSS_SELECTOR, "button.disconnect"),
            message="the disconnect button",
        )
        d.find_element(By.CSS_SELECTOR, "button.disconnect").click()
        d.switch_to.alert.accept()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
    finally:
        await ws.close()


def _export_lines(n: int) -> list[str]:
    """An exported history of n events: a session created, then n - 1 state changes."""
    sid = str(uuid.uuid4())
    actor = f"session:{sid}"

    def line(version: int, type_: str, data: dict) -> str:
        return json.dumps(
            {
                "event_id": uuid.uuid4().hex,
                "actor_id": actor,
                "version": version,
                "partition": 0,
                "ts": 1_700_000_000_000 + version,
                "command_id": f"cmd-{version}",
                "correlation_id": f"corr-{version}",
                "causation_id": "",
                "type": type_,
                "data": data,
            }
        )

    out = [
        line(
            1,
            "SessionCreated",
            {
                "at": 1_700_000_000_001,
                "session_id": sid,
                "user_id": "replayed",
                "expires_at": 1_800_000_000_000,
                "ttl_ms": 1000,
            },
        )
    ]
    out += [
        line(
            v,
            "StateChanged",
            {
                "at": 1_700_000_000_000 + v,
                "changes": {"step": v},
                "deleted_keys": [],
                "state_version": v - 1,
            },
        )
        for v in range(2, n + 1)
    ]
    return out


async def test_an_exported_file_of_ten_thousand_events_replays_in_the_page(
    stack: Stack, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    exported = tmp_path / "history.jsonl"
    exported.write_text("\n".join(_export_lines(10_000)) + "\n")
    run = asyncio.to_thread
    d = browser
    await run(d.get, stack.base + "/admin")
    await run(wait, d, lambda d: d.find_elements(By.ID, "token"), message="login form")
    # a token without the admin role, then no token at all, are refused with a reason
    for token, reason in ((stack.token("mallory"), "no admin role"), ("junk", "sign-in failed")):
        d.find_element(By.ID, "token").clear()
        d.find_element(By.ID, "token").send_keys(token)
        d.find_element(By.ID, "sign-in").click()
        await run(wait, d, lambda d, r=reason: r in text(d, "#login"), message=reason)
    d.find_element(By.ID, "token").clear()
    d.find_element(By.ID, "token").send_keys(stack.token("root", "admin"))
    d.find_element(By.ID, "sign-in").click()
    await run(wait, d, lambda d: d.find_elements(By.ID, "search-user"), message="signed in")
    await run(d.get, stack.base + "/admin#/replay")
    await run(wait, d, lambda d: d.find_elements(By.ID, "replay-file"), message="file input")
    d.find_element(By.ID, "replay-file").send_keys(str(exported))
    await run(
        wait,
        d,
        lambda d: text(d, "#event-count") == "10000 of 10000 events",
        timeout=30,
        message="10,000 events loaded",
    )
    await run(
        wait,
        d,
        lambda d: state_shown(d).get("state", {}).get("state") == {"step": 10_000},
        message="the last state",
    )
    # virtualised: a few dozen rows exist, not 10,000, wherever the list is scrolled
    assert len(d.find_elements(By.CSS_SELECTOR, ".vrow")) < 80
    d.find_element(By.ID, "filter-correlation").send_keys("corr-5000")
    await run(
        wait,
        d,
        lambda d: text(d, "#event-count") == "1 of 10000 events",
        message="the correlation filter",
    )
    await run(
        wait,
        d,
        lambda d: state_shown(d).get("state", {}).get("state") == {"step": 5000},
        message="the state at version 5000",
    )
    assert "4999" in text(d, "#diff") and "5000" in text(d, "#diff")
    d.find_element(By.ID, "filter-correlation").clear()
    d.execute_script(
        "document.getElementById('filter-correlation').dispatchEvent(new Event('input'))"
    )
    await run(
        wait,
        d,
        lambda d: text(d, "#event-count") == "10000 of 10000 events",
        message="the filter cleared",
    )
    # scrolled to the middle, the rows drawn are the ones in view, and still only a few dozen
    d.execute_script("document.querySelector('.vlist').scrollTop = 5000 * 28")
    await run(
        wait,
        d,
        lambda d: d.find_elements(By.CSS_SELECTOR, '.vrow[data-index="5005"]'),
        message="the rows in view drawn",
    )
    assert len(d.find_elements(By.CSS_SELECTOR, ".vrow")) < 80
    await run(shot, d, "replay")
