"""Smoke tests on a shared server: a bounded queue and one child process per run.

Several users of one app server must not be able to take it down together:

* :class:`SmokeQueue` admits at most ``max_running`` runs server-wide (default
  ``BACKEND_SMOKE_CONCURRENCY`` or 2); the others wait in arrival order and
  are told their place in the queue. A waiter that is cancelled (its browser
  session ended, the user navigated away) leaves the queue.
* :func:`run_smoke_process` runs ``python -m backend smoke --json`` in a child
  process, so the run's memory is its own (the child's peak RSS, not the
  server's) and its budget is a share of the free memory
  (:func:`run_budget_bytes`: half of ``MemAvailable`` split between the
  admitted runs, instead of half of it for every run at once). Cancelling
  kills the child; nothing of it stays in the server.

No torch and no streamlit here: the app polls through the ``tick`` callback,
where Streamlit raises its stop exception when the session goes away.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import DesignError
from .smoke import DEFAULT_FRACTION, available_bytes

ROOT = Path(__file__).resolve().parent.parent.parent
CONCURRENCY_ENV = "BACKEND_SMOKE_CONCURRENCY"
_PROGRESS = re.compile(r"^\[\s*(\d+)%\] (.*)$")


def default_concurrency() -> int:
    try:
        return max(1, int(os.environ.get(CONCURRENCY_ENV, "2")))
    except ValueError:
        return 2


class SmokeQueue:
    """First come, first served admission of at most ``max_running`` concurrent runs (thread-safe)."""

    def __init__(self, max_running: int | None = None):
        self.max_running = max_running or default_concurrency()
        self._cond = threading.Condition()
        self._waiting: list[object] = []
        self._running: set[object] = set()

    @property
    def running(self) -> int:
        with self._cond:
            return len(self._running)

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def slot(self, tick: Callable[[int], None] = lambda ahead: None, poll_s: float = 0.25) -> Iterator[None]:
        """Wait for a turn, calling ``tick(runs ahead of this one)`` while waiting; an exception from
        ``tick`` (a cancelled session) leaves the queue. The slot is released on exit, whatever happens."""
        ticket = object()
        with self._cond:
            self._waiting.append(ticket)
        try:
            while True:
                with self._cond:
                    ahead = self._waiting.index(ticket)
                    if ahead == 0 and len(self._running) < self.max_running:
                        self._waiting.pop(0)
                        self._running.add(ticket)
                        self._cond.notify_all()
                        break
                    ahead += len(self._running) - self.max_running + 1  # runs that must finish first
                tick(max(ahead, 1))
                with self._cond:
                    self._cond.wait(poll_s)
            yield
        finally:
            with self._cond:
                if ticket in self._waiting:
                    self._waiting.remove(ticket)
                self._running.discard(ticket)
                self._cond.notify_all()


def run_budget_bytes(max_running: int) -> int:
    """Each admitted run's memory budget: the default fraction of free memory, shared by the runs allowed at once."""
    return int(DEFAULT_FRACTION * available_bytes() / max(1, max_running))


def run_smoke_process(design: dict[str, Any], *, scaled: bool = False, budget_bytes: int | None = None,
                      progress: Callable[[str, float, str], None] = lambda step, fraction, message: None,
                      tick: Callable[[], None] = lambda: None, timeout_s: float = 900.0,
                      poll_s: float = 0.2) -> dict[str, Any]:
    """Run the smoke test of ``design`` in a child process.

    Returns ``{"result": SmokeResult.to_dict()}`` or ``{"refused": {...}}`` (the
    refusal's fields); raises :class:`DesignError` for a design the child
    rejects. ``tick`` runs every ``poll_s`` seconds: whatever it raises kills
    the child and propagates.
    """
    with tempfile.TemporaryDirectory(prefix="smoke-") as tmp:
        path = Path(tmp) / "design.json"
        path.write_text(json.dumps(design))
        cmd = [sys.executable, "-m", "backend", "smoke", str(path), "--json"]
        if scaled:
            cmd.append("--scaled")
        if budget_bytes is not None:
            cmd += ["--budget-gb", repr(budget_bytes / 2**30)]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        out: list[str] = []
        out_reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)
        out_reader.start()
        seen, deadline = 0, time.monotonic() + timeout_s
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise DesignError("smoke", f"did not finish within {timeout_s:.0f} s")
                seen = _report(lines, seen, progress)
                tick()
                time.sleep(poll_s)
            reader.join(5)
            out_reader.join(5)
            _report(lines, seen, progress)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    stdout = "".join(out).strip()
    errors = [ln.strip() for ln in lines if ln.startswith("error: ")]
    if proc.returncode == 2 and stdout.startswith("{") and json.loads(stdout).get("refused"):
        return {"refused": json.loads(stdout)}
    if proc.returncode in (0, 1) and stdout.startswith("{"):
        return {"result": json.loads(stdout)}
    if proc.returncode == 2 and errors:
        raise DesignError("smoke", errors[-1][len("error: "):])
    tail = (errors or [ln.strip() for ln in lines if ln.strip()] or ["no output"])[-1]
    raise RuntimeError(f"smoke process exited with {proc.returncode}: {tail[:300]}")


def _report(lines: list[str], seen: int, progress: Callable[[str, float, str], None]) -> int:
    for line in lines[seen:]:
        m = _PROGRESS.match(line.strip())
        if m:
            progress(m.group(2), int(m.group(1)) / 100, m.group(2))
    return len(lines)
