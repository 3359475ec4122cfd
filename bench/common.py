"""What the benchmarks share: servers run as subprocesses, throwaway databases, the machine.

A benchmark starts the service the way an operator would (`whereabouts serve` with its
environment), polls until it answers, measures, and stops it; nothing here sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path
from types import TracebackType

import asyncpg
import httpx
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A benchmark could not run or its result did not check out."""


class ServerGone(BenchError):
    """The server under test stopped answering (on a shared machine, maybe stopped from outside)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def executable(name: str) -> str:
    """Find a console script of this environment (beside the running Python), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} is not installed in this environment (run `make install`)")
    return found


def run_command(argv: Sequence[str], env: Mapping[str, str], timeout: float = 120.0) -> str:
    """Run a command to completion and return its stdout; raise with its stderr if it fails."""
    done = subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr.strip()}")
    return done.stdout


def _stat(pid: int) -> list[str]:
    # Fields after the command name: state, ppid, ..., utime (index 11), stime (index 12).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_tree(pid: int) -> list[int]:
    """Return a process and its live descendants (uvicorn workers, for instance)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                children.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time a process and its live descendants have used so far."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = _stat(member)
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def cpu_seconds_of(command_name: str) -> float:
    """Return the CPU time used so far by every live process with this name (e.g. postgres)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == command_name:
                fields = _stat(int(entry.name))
                total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # the process ended while we looked
    return total


def machine_cpu_seconds() -> float:
    """Return the CPU time every process on the machine has used since boot (all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


async def busy_cores(window: float = 2.0) -> float:
    """Measure how many cores the whole machine keeps busy over a short window."""
    before = machine_cpu_seconds()
    await asyncio.sleep(window)  # a sampling interval, not a wait for something to happen
    return (machine_cpu_seconds() - before) / window


async def wait_until_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most `max_wait` s) until other work keeps under `threshold` cores busy.

    On a shared machine other jobs steal the cores a benchmark measures; waiting for a lull
    makes figures comparable. Return the load last seen, for the report.
    """
    deadline = time.monotonic() + max_wait
    load = await busy_cores()
    while load > threshold and time.monotonic() < deadline:
        load = await busy_cores()
    return load


def peak_rss_mib(pid: int) -> float:
    """Return the peak resident memory of a process and its live descendants, added up, in MiB."""
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmHWM:"))
    return total / 1024


class Server:
    """A service run as a subprocess for the length of a `with` block.

    Entering starts it and polls `health_url` until it answers 200 (or the process dies, or
    `ready_timeout` passes); leaving stops it with SIGINT, then SIGKILL if it lingers.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        health_url: str,
        log_path: Path,
        *,
        ready_timeout: float = 60.0,
        stop_timeout: float = 15.0,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.health_url = health_url
        self.log_path = log_path
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def __enter__(self) -> Server:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout
        with httpx.Client(timeout=1.0) as client:
            while True:
                try:
                    if client.get(self.health_url).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.argv[0]} did not answer within {self.ready_timeout}s")
                # Waiting on the process doubles as the pause between polls and notices a crash.
                try:
                    code = self._process.wait(timeout=0.05)
                except subprocess.TimeoutExpired:
                    continue
                raise BenchError(f"{' '.join(self.argv)} exited {code}:\n{self.log_tail()}")

    def status(self) -> str:
        """Say whether the server still runs, or how it ended."""
        assert self._process is not None
        code = self._process.poll()
        if code is None:
            return f"server pid {self.pid} still running"
        if code < 0:
            return f"server pid {self.pid} was killed by signal {-code}"
        return f"server pid {self.pid} exited with status {code}"

    def log_tail(self, lines: int = 30) -> str:
        """Return the last lines the server printed."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (graceful first) and wait for it to exit."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=self.stop_timeout)


class Profiler:
    """py-spy sampling a running process for the length of a `with` block (raw collapsed stacks).

    The output has one line per distinct stack, `thread;frame;frame;... count`: load it into
    speedscope or flamegraph tools, or sum it with a short script.
    """

    def __init__(self, pid: int, output: Path, rate: int = 100, *, idle: bool = False) -> None:
        self.argv = [
            executable("py-spy"), "record", "--pid", str(pid), "--rate", str(rate),
            "--format", "raw", "--threads", "--subprocesses", "--nonblocking",
            "--output", str(output),
        ]  # fmt: skip
        if idle:
            self.argv.append("--idle")
        self.output = output
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profiler:
        with self.output.with_suffix(".log").open("wb") as log:
            self._process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


def database_url(admin_url: str, database: str) -> str:
    """Return `admin_url` pointing at another database on the same server."""
    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


@asynccontextmanager
async def throwaway_postgres(admin_url: str, prefix: str = "wa_bench") -> AsyncIterator[str]:
    """Create an empty database for the block and drop it afterwards; yield its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_url(admin_url, name)
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def postgres_version(admin_url: str) -> str:
    """Return the PostgreSQL server's version string."""
    conn = await asyncpg.connect(admin_url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def machine(packages: Sequence[str] = ()) -> dict[str, str]:
    """Describe the machine and the software a benchmark ran on."""
    described = {
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "ram": f"{_memory_gib():.1f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    for name in packages:
        try:
            described[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            described[name] = "not installed"
    return described


def code_revision() -> str:
    """Name the commit the benchmark ran on, flagging uncommitted changes under app/."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (+{len(dirty)} uncommitted files in app/)" if dirty else head


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the value at `fraction` (0..1) of the sorted values (nearest rank)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]
