"""The demo behind a real `whereabouts serve`: load it once, then serve copies on free ports."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "browser-tests-secret-" + "x" * 32
START_PATIENCE = 20.0
STOP_PATIENCE = 5.0


@dataclass(frozen=True)
class DemoData:
    """The demo as `whereabouts demo --no-serve` printed it."""

    database: Path
    api_key: str
    tokens: dict[str, str]


@dataclass
class DemoServer:
    """A running `whereabouts serve` over its own copy of the demo database."""

    base_url: str
    api_key: str
    tokens: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def url(self, number: str, lang: str | None = None) -> str:
        """The tracking page of a demo order (optionally in a given language)."""
        suffix = f"?lang={lang}" if lang else ""
        return f"{self.base_url}/t/{self.tokens[number]}{suffix}"

    def api(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Call the brand API as the demo brand."""
        return httpx.request(
            method,
            f"{self.base_url}/api/v1{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=10,
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(database: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{database}",
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "SECRET_KEY": SECRET,
        "LOG_LEVEL": "warning",
    }


def load_demo(folder: Path) -> DemoData:
    database = folder / "demo.db"
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--no-serve"],
        cwd=ROOT,
        env=_env(database, _free_port()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"whereabouts demo failed:\n{done.stdout}\n{done.stderr}", pytrace=False)
    key = re.search(r"API key:\s*(\S+)", done.stdout)
    tokens = dict(re.findall(r"^\s+(D-\d+)\s+\S+/t/([A-Za-z0-9_-]+)\s*$", done.stdout, re.M))
    if key is None or not tokens:
        pytest.fail(f"cannot read the demo's key and links from:\n{done.stdout}", pytrace=False)
    return DemoData(database, key.group(1), tokens)


def start(demo: DemoData, folder: Path) -> DemoServer:
    """Copy the demo database into `folder` and serve it; return once /healthz answers."""
    folder.mkdir(parents=True, exist_ok=True)
    database = folder / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{demo.database}{suffix}")
        if source.exists():
            shutil.copyfile(source, f"{database}{suffix}")
    log = folder / "server.log"
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--no-migrate"],
            cwd=ROOT,
            env=_env(database, port),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = DemoServer(f"http://127.0.0.1:{port}", demo.api_key, demo.tokens, process, log)
    deadline = time.monotonic() + START_PATIENCE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.05)  # poll interval: the server is still binding its port
    stop(server)
    pytest.fail(
        f"the server did not answer /healthz in {START_PATIENCE:.0f} s:\n{server.log_tail()}"
    )


def stop(server: DemoServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(STOP_PATIENCE)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def check_log(server: DemoServer) -> None:
    text = server.log.read_text(errors="replace")
    if "Traceback" in text:
        pytest.fail(f"the server logged an error:\n{server.log_tail(60)}", pytrace=False)
