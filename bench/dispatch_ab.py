"""Compare the dispatcher of two revisions by taking turns, on a machine whose speed wanders.

    python bench/dispatch_ab.py REV_A REV_B [--messages 8000] [--runs 4]

Some machines this project runs on change speed by a quarter within minutes, with nothing
else running, so two `bench/dispatch.py` runs minutes apart cannot tell a 10 % change. This
checks out both revisions (git worktrees in a temporary directory), then runs A, B, A, B, ...:
each run a fresh process that imports that revision's code and its `bench/dispatch.py`, loads
`messages / 2` orders into a fresh SQLite file (outside the timing), and drains the outbox with
one worker against fresh fakes, as `bench/dispatch.py` does. It prints each run's messages per
second and the worker's CPU per message, then the medians; a run whose messages did not all
go out once exits the comparison with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revisions", nargs="*", help="two git revisions, A then B")
    parser.add_argument("--messages", type=int, default=8000)
    parser.add_argument("--runs", type=int, default=4, help="runs of each revision")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a checkout to run once, in-process
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_one(Path(args.child), args.messages))))
        return 0
    if len(args.revisions) != 2:
        parser.error("give two revisions")
    with tempfile.TemporaryDirectory(prefix="dispatch-ab-") as tmp:
        roots = []
        for label, revision in zip("AB", args.revisions, strict=True):
            root = Path(tmp) / label
            subprocess.run(
                ["git", "-C", str(HERE), "worktree", "add", "--detach", "-q", str(root), revision],
                check=True,
            )
            roots.append(root)
        try:
            results = _alternate(roots, args.messages, args.runs)
        finally:
            for root in roots:
                subprocess.run(
                    ["git", "-C", str(HERE), "worktree", "remove", "--force", str(root)],
                    check=False,
                )
    failed = False
    for label, revision in zip("AB", args.revisions, strict=True):
        runs = results[label]
        failed = failed or any(run["problems"] for run in runs)
        rates = ", ".join(f"{run['per_second']:,.0f}" for run in runs)
        cpus = ", ".join(f"{run['cpu_ms']:.2f}" for run in runs)
        print(
            f"{label} {revision}: messages/s {rates} (median "
            f"{statistics.median(r['per_second'] for r in runs):,.0f}); worker CPU ms/message "
            f"{cpus} (median {statistics.median(r['cpu_ms'] for r in runs):.2f})"
        )
    return 1 if failed else 0


def _alternate(roots: list[Path], messages: int, runs: int) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    for turn in range(runs):
        for label, root in zip("AB", roots, strict=True):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(root), "--messages", str(messages)],
                check=True,
                capture_output=True,
                text=True,
                cwd=root,
            )
            run = json.loads(out.stdout.strip().splitlines()[-1])
            results[label].append(run)
            print(
                f"  run {turn + 1} {label}: {run['per_second']:,.0f} messages/s, "
                f"{run['cpu_ms']:.2f} ms CPU a message",
                flush=True,
            )
    return results


async def _one(root: Path, messages: int) -> dict[str, Any]:
    """Load and drain one outbox with the checkout at `root` (imported first on sys.path)."""
    sys.path[:0] = [str(root), str(root / "bench")]
    os.chdir(root)
    import dispatch as bench  # that checkout's bench/dispatch.py, first on sys.path

    work = Path(tempfile.mkdtemp(prefix="dispatch-ab-run-"))
    url = f"sqlite:///{work}/dispatch.db"
    await bench.load_orders(url, bench.order_payloads(messages // 2))
    config = argparse.Namespace(batch=200, concurrency=32, max_seconds=600)
    with bench.fakes(work, "ab") as fakes:
        worker = await bench.Worker.start(bench._config(config, url, fakes, "ab"), timed=False)
        cpu, started = time.process_time(), time.perf_counter()
        try:
            sent = await worker.drain(time.monotonic() + 600)
        finally:
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            await worker.close()
        _, problems = await bench.check_run(url, fakes, messages)
    return {
        "per_second": sent / seconds,
        "cpu_ms": cpu * 1000 / max(sent, 1),
        "problems": problems[:3],
    }


if __name__ == "__main__":
    sys.exit(main())
