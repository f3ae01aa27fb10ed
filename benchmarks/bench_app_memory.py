"""Benchmark: the app server's memory under one hostile share link and three concurrent smoke sessions.

Run from the repo root: ``python benchmarks/bench_app_memory.py``. Starts a real
``streamlit run app/main.py``, drives Debian's Chromium with Playwright and samples, every
0.1 s from ``/proc``, the resident memory of the server process alone and of the server with
its children (each smoke run is a child process with its own budget):

1. idle server (no session);
2. a share link of the hardening issue's hostile design (1,024 distinct layers, each a
   1,024-expert MoE, distinct by width): opened, its metrics drawn, the page closed;
3. three browser sessions that each press "Run smoke test" on a small design at once
   (the server runs at most ``SmokeQueue.max_running`` of them; the others wait in the queue).

Prints the peak of each phase and the bound it is checked against (``BOUND_MIB``, the
documented bound in the README): the server alone must stay under it, whatever the design.
"""
from __future__ import annotations

import datetime
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

from streamlit_server import CHROMIUM, CHROMIUM_ARGS, streamlit_server, wait_idle  # noqa: E402

BOUND_MIB = 1024  # the server process (without its smoke children) under any design


def hostile_design(n: int = 1024) -> dict:
    return {"name": "hostile", "vocab_size": 1000, "hidden_size": 64, "n_heads": 4, "max_seq_len": 128,
            "layers": {"n_layers": n, "mlp": "moe", "params": {"mlp": {"num_experts": 1024, "top_k": 2}},
                       "explicit": [{"params": {"mlp": {"hidden": 16 + i}}} for i in range(n)]}}


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            out.extend(int(c) for c in text)
    except OSError:
        return out
    return out + [g for c in out for g in _children(c)]


class Sampler:
    """Peak RSS (MiB) of a process alone and with its descendants, sampled in a thread."""

    def __init__(self, pid: int):
        self.pid, self.peak_self, self.peak_tree = pid, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            own = _rss_kib(self.pid)
            tree = own + sum(_rss_kib(c) for c in _children(self.pid))
            self.peak_self = max(self.peak_self, own / 1024)
            self.peak_tree = max(self.peak_tree, tree / 1024)
            time.sleep(0.1)

    def __enter__(self) -> "Sampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _server_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"streamlit" in b" ".join(cmd) and port.encode() in cmd:
                return int(proc.name)
    raise RuntimeError("streamlit server process not found")


def main() -> None:
    from playwright.sync_api import sync_playwright

    from backend.share import encode_design

    print(f"# bench_app_memory  {datetime.date.today()}  python {sys.version.split()[0]}  cores {os.cpu_count()}")
    with streamlit_server() as url, sync_playwright() as pw:
        pid = _server_pid(url)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        time.sleep(2)
        print(f"idle server: {_rss_kib(pid) / 1024:.0f} MiB")

        with Sampler(pid) as s:
            t0 = time.perf_counter()
            page = browser.new_page()
            page.set_default_timeout(300_000)
            page.goto(f"{url}/?d={encode_design(hostile_design())}")
            page.wait_for_selector('[data-testid="stMetricValue"]')
            wait_idle(page)
            shown = time.perf_counter() - t0
            page.close()
            time.sleep(3)
            after = _rss_kib(pid) / 1024
        print(f"hostile share link (1,024 layers x 1,024 experts): metrics in {shown:.1f} s, server peak "
              f"{s.peak_self:.0f} MiB, {after:.0f} MiB after the page closed")
        hostile_peak = s.peak_self

        token = encode_design({"name": "small", "vocab_size": 512, "hidden_size": 64, "n_heads": 4, "max_seq_len": 64,
                               "layers": {"n_layers": 2}})
        pages = []
        for _ in range(3):
            page = browser.new_page()
            page.set_default_timeout(300_000)
            page.goto(f"{url}/smoke?d={token}")
            page.get_by_text("Run smoke test").first.wait_for()
            pages.append(page)
        with Sampler(pid) as s:
            t0 = time.perf_counter()
            for page in pages:
                page.get_by_text("Run smoke test").first.click()
            for page in pages:
                page.get_by_text("passed in").first.wait_for()
            took = time.perf_counter() - t0
        print(f"three concurrent smoke sessions: all passed in {took:.1f} s, server peak {s.peak_self:.0f} MiB, "
              f"server + smoke children peak {s.peak_tree:.0f} MiB")
        for page in pages:
            page.close()
        browser.close()
        worst = max(hostile_peak, s.peak_self)
        print(f"bound: server <= {BOUND_MIB} MiB: {'met' if worst <= BOUND_MIB else 'NOT met'} (peak {worst:.0f} MiB)")


if __name__ == "__main__":
    main()
