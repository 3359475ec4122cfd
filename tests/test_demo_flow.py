"""The demo, run as an operator runs it: messages in the dev inbox, a reply, a webhook.

`whereabouts demo` in a subprocess on a free port; a supply date moved through the API puts one
email and one SMS per affected shopper in the dev inbox (D-1010's stalled parcel has had its own);
a signed reply to the choice SMS (the
`whereabouts sms reply` command) records the choice, the page shows it, and the brand's
receiver gets a signed `choice.made` webhook.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)  # poll
    raise AssertionError("the demo did not get there in time")


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "SENDGRID_"))},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}",
        "PORT": str(port),
        "PUBLIC_URL": url,
        "LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    key = ""
    for line in process.stdout:
        if "API key:" in line:
            key = line.split("API key:")[1].strip()
        if line.strip().startswith("D-1005"):
            env["D1005"] = line.split()[1]
        if "D-1009" in line:
            break
    try:
        _until(lambda: _get(f"{url}/healthz") is not None)
        yield url, key, env
    finally:
        process.terminate()
        process.wait(30)
        process.stdout.close()


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def _inbox(url: str) -> list[dict[str, Any]]:
    response = _get(f"{url}/dev/inbox.json")
    return response.json()["messages"] if response is not None else []


def test_the_demo_shows_news_takes_a_reply_and_tells_the_brand(
    demo: tuple[str, str, dict[str, str]],
) -> None:
    url, key, env = demo
    # The demo's own news goes out at once: D-1005's shopper has the choice SMS.
    choice_sms = _until(
        lambda: [m for m in _inbox(url) if m["to"] == "+14155550005" and m["channel"] == "sms"]
    )
    assert "1 to keep waiting" in choice_sms[0]["body"]
    assert choice_sms[0]["segments"] <= 2

    # D-1010's carrier stopped scanning 5 days ago: the worker's first sweep told its shopper.
    def stall_news() -> list[dict[str, Any]]:
        mine = [m for m in _inbox(url) if m["to"] in {"+14155550010", "shopper10@example.com"}]
        return mine if {m["channel"] for m in mine} == {"email", "sms"} else []

    stalled = _until(stall_news)
    assert len(stalled) == 2
    sms = next(m for m in stalled if m["channel"] == "sms")
    assert "A parcel from order D-1010 is delayed." in sms["body"]

    before = {m["id"] for m in _inbox(url)}
    moved = httpx.patch(
        f"{url}/api/v1/skus/SKI-WAX/supply/PO-6100",
        json={"expected_date": "2027-01-20"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert moved.status_code == 200, moved.text

    def news() -> list[dict[str, Any]]:
        fresh = [m for m in _inbox(url) if m["id"] not in before]
        return fresh if {m["channel"] for m in fresh} == {"email", "sms"} else []

    fresh = _until(news)
    time.sleep(1.0)  # poll: a second look, nothing more arrives for the same change
    assert len([m for m in _inbox(url) if m["id"] not in before]) == len(fresh) == 2
    email = next(m for m in fresh if m["channel"] == "email")
    assert "D-1006" in email["subject"]

    reply = subprocess.run(
        [sys.executable, "-m", "app.cli", "sms", "reply", "--from", "+14155550005", "--body", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reply.returncode == 0, reply.stderr
    assert "keep it on order" in reply.stdout

    webhook = _until(
        lambda: [
            w
            for w in _get(f"{url}/dev/webhooks.json").json()["webhooks"]  # type: ignore[union-attr]
            if w["payload"]["type"] == "choice.made"
        ]
    )
    assert webhook[0]["verified"] is True
    assert webhook[0]["payload"]["data"]["order"] == "D-1005"
    assert webhook[0]["payload"]["data"]["decision"] == "keep"
    page = httpx.get(env["D1005"], timeout=10)
    assert "You chose to keep waiting" in page.text
