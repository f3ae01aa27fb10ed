"""The malformed-design corpus (tests/malformed/): every file is rejected cleanly.

Each file runs through ``python -m backend plan FILE`` in its own process and
must exit 2 with exactly one line on stderr, no traceback, nothing on stdout,
and a message containing the substring that tests/malformed/expected.yaml
names (the field path, or the file name when the document is not a readable
mapping). Processes run two at a time; each one's wall time is measured.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from backend.cli import main

CORPUS = Path(__file__).resolve().parent / "malformed"
EXPECTED: dict[str, str] = yaml.safe_load((CORPUS / "expected.yaml").read_text())
FILES = sorted(p.name for p in CORPUS.iterdir() if p.name != "expected.yaml")

# Budgets are CPU seconds (user + sys of the process), not wall time, so a busy
# machine cannot make them flake. Whole process per file (interpreter start +
# imports + validation): ~0.2 s here; 1 s would mean torch got imported.
PROCESS_LIMIT_S = 1.0
# In-process budget: loading and validating must take milliseconds, not seconds.
IN_PROCESS_LIMIT_S = 0.5


def test_corpus_is_large_and_fully_described():
    assert len(FILES) >= 30
    assert set(FILES) == set(EXPECTED), "every corpus file needs an expectation in expected.yaml (and vice versa)"


@pytest.fixture(scope="module")
def runs(repo_root) -> dict[str, tuple[subprocess.CompletedProcess, float]]:
    def run(name: str):
        proc = subprocess.Popen([sys.executable, "-m", "backend", "plan", str(CORPUS / name)], cwd=repo_root,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time, whatever else runs
        result = subprocess.CompletedProcess(proc.args, os.waitstatus_to_exitcode(status), proc.stdout.read(), proc.stderr.read())
        proc.stdout.close()
        proc.stderr.close()
        proc.returncode = result.returncode
        return name, (result, usage.ru_utime + usage.ru_stime)

    with ThreadPoolExecutor(max_workers=2) as pool:
        out = dict(pool.map(run, FILES))
    times = sorted(t for _, t in out.values())
    print(f"\nmalformed corpus: {len(times)} files, per-process CPU time median {times[len(times) // 2]:.3f}s, max {times[-1]:.3f}s")
    return out


@pytest.mark.parametrize("name", FILES)
def test_malformed_file_exits_2_with_one_line(runs, name):
    proc, elapsed = runs[name]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == "", "no partial output"
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("error: ")
    assert EXPECTED[name] in lines[0], f"{lines[0]!r} should name {EXPECTED[name]!r}"
    assert elapsed < PROCESS_LIMIT_S, f"{name} took {elapsed:.2f} CPU s"


@pytest.mark.parametrize("name", FILES)
def test_malformed_file_rejected_in_milliseconds(name, capsys):
    # this thread's CPU time only: process_time also counts other threads earlier tests left running (a
    # server, torch's pool), and a collection of their garbage is not this rejection's work
    import gc

    gc.collect()
    gc.disable()
    try:
        start = time.thread_time()
        assert main(["plan", str(CORPUS / name)]) == 2
        elapsed = time.thread_time() - start
    finally:
        gc.enable()
    out, err = capsys.readouterr()
    assert out == "" and EXPECTED[name] in err
    assert elapsed < IN_PROCESS_LIMIT_S, f"{name} took {elapsed:.3f}s in process"
