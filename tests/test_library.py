"""The design library: append-only revisions, concurrency, crash safety, CLI.

Every database test runs against SQLite in a temporary folder and, when
``BACKEND_TEST_POSTGRES_URL`` is set (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/designs_test``), against
PostgreSQL too. Postgres tests use fresh design names, so a shared database
is fine.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from backend.errors import DesignError
from backend.library import Library, content_hash, diff_designs, format_diff
from backend.spec import load_design

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("BACKEND_TEST_POSTGRES_URL", "")


def tiny(n_layers: int = 2, hidden: int = 32, **extra) -> dict:
    d = {"name": "tiny", "description": "a tiny decoder", "hidden_size": hidden, "n_heads": 4, "vocab_size": 100,
         "max_seq_len": 64, "layers": {"n_layers": n_layers}}
    d.update(extra)
    return d


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'lib' / 'library.db'}"
    if not PG_URL:
        pytest.skip("set BACKEND_TEST_POSTGRES_URL to run the PostgreSQL variant")
    return PG_URL


@pytest.fixture
def lib(db_url):
    library = Library(db_url)
    yield library
    library.close()


def uname(prefix: str = "d") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------
# Basics


def test_every_save_is_a_new_revision(lib):
    name = uname()
    r1 = lib.save(tiny(), author="alice", message="first", name=name)
    r2 = lib.save(tiny(), author="bob", message="same content again", name=name)
    r3 = lib.save(tiny(n_layers=3), author="carol", message="deeper", name=name)
    assert [r.revision for r in (r1, r2, r3)] == [1, 2, 3]
    assert r1.content_hash == r2.content_hash != r3.content_hash
    revs = lib.revisions(name)
    assert [(r.revision, r.author, r.message) for r in revs] == [(1, "alice", "first"), (2, "bob", "same content again"), (3, "carol", "deeper")]
    assert lib.load(name, 1).layers.n_layers == 2  # the old revision is untouched
    assert lib.load(name).layers.n_layers == 3  # latest by default
    rev = lib.get(name, 1)
    assert content_hash(rev.design_yaml) == rev.content_hash
    assert rev.created_at.tzinfo is not None and rev.created_at.utcoffset().total_seconds() == 0
    assert revs[0].created_at <= revs[1].created_at <= revs[2].created_at


def test_list_search_and_latest(lib):
    a, b = uname("alpha"), uname("beta")
    lib.save(tiny(), author="Alice", message="a1", name=a)
    lib.save(tiny(description="Spectral hybrid"), author="bob", message="b1", name=b)
    lib.save(tiny(n_layers=4, description="spectral hybrid, deeper"), author="dora", message="b2", name=b)
    rows = {r.name: r for r in lib.list()}
    assert rows[b].n_revisions == 2 and rows[b].latest.revision == 2 and rows[b].latest.author == "dora"
    assert rows[a].latest.revision == 1
    assert [r.name for r in lib.search("SPECTRAL") if r.name in (a, b)] == [b]  # description, case-insensitive
    assert {r.name for r in lib.search("alice")} >= {a}  # author
    assert b in {r.name for r in lib.search("bob")}  # an earlier revision's author counts
    assert {r.name for r in lib.search(a[-6:])} == {a}  # name substring
    assert lib.search("100%_no_such") == []  # LIKE wildcards are literal


def test_validation_before_saving(lib):
    name = uname()
    with pytest.raises(DesignError, match="hidden_size"):
        lib.save(tiny(hidden=0), author="alice", name=name)
    with pytest.raises(DesignError, match="author"):
        lib.save(tiny(), author="  ", name=name)
    with pytest.raises(DesignError, match="no such design"):
        lib.revisions(name)  # nothing was stored


def test_missing_revision_and_design(lib):
    name = uname()
    lib.save(tiny(), author="a", name=name)
    with pytest.raises(DesignError, match="no such revision"):
        lib.get(name, 2)
    with pytest.raises(DesignError, match="no such design"):
        lib.get(uname(), 1)


def test_delete_needs_confirmation(lib):
    name = uname()
    lib.save(tiny(), author="a", name=name)
    lib.save(tiny(n_layers=3), author="a", name=name)
    with pytest.raises(DesignError, match="confirmation"):
        lib.delete(name)
    with pytest.raises(DesignError, match="confirmation"):
        lib.delete(name, confirm="yes")  # only a real True confirms
    assert len(lib.revisions(name)) == 2
    assert lib.delete(name, confirm=True) == 2
    assert name not in {r.name for r in lib.list()}
    assert lib.save(tiny(), author="a", name=name).revision == 1  # a fresh history after deletion


def test_diff_fields_plan_and_numbers(lib):
    name = uname()
    lib.save(tiny(n_layers=2), author="a", name=name)
    lib.save(tiny(n_layers=3, hidden=64, layers={"n_layers": 3, "rules": [{"when": {"layer_idx": [1]}, "mlp": "geglu"}]}), author="b", name=name)
    d = lib.diff(name, 1, 2)
    fields = {f["field"]: (f["a"], f["b"]) for f in d["fields"]}
    assert fields["hidden_size"] == (32, 64)
    assert fields["layers.n_layers"] == (2, 3)
    plan = d["plan"]
    assert plan["depth"] == {"a": {"layers": 2}, "b": {"layers": 3}}
    assert [c["index"] for c in plan["changed"]] == [1] and plan["changed"][0]["changes"]["mlp"] == {"a": "swiglu", "b": "geglu"}
    assert [x["index"] for x in plan["added"]] == [2] and plan["removed"] == []
    numbers = d["numbers"]
    if numbers["available"]:  # backend.analysis present: headline numbers with deltas
        rows = {r["metric"]: r for r in numbers["rows"]}
        assert rows["params.total"]["b"] > rows["params.total"]["a"]
    else:
        assert "plan diff only" in numbers["note"] or numbers["note"]
    text = format_diff(d)
    assert "hidden_size: 32 -> 64" in text and "layers[2]" in text
    same = diff_designs(load_design(tiny()), load_design(tiny()), numbers=False)
    assert same["same_content"] and same["fields"] == [] and same["plan"]["changed"] == []


# ---------------------------------------------------------------------------
# Concurrency


def test_concurrent_saves_threads(db_url):
    name, n_threads, per_thread = uname("threads"), 6, 8
    libs = [Library(db_url) for _ in range(2)]  # two engines (pools) plus threads sharing each
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                libs[t % 2].save(tiny(n_layers=1 + (i % 3)), author=f"t{t}", message=f"{t}-{i}", name=name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    revs = libs[0].revisions(name)
    assert [r.revision for r in revs] == list(range(1, n_threads * per_thread + 1))
    assert sorted(r.message for r in revs) == sorted(f"{t}-{i}" for t in range(n_threads) for i in range(per_thread))
    for lib in libs:
        lib.close()


_SAVE_WORKER = r"""
import os, sys, time
from backend.library import Library
url, name, worker, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:  # start together
    time.sleep(0.01)
lib = Library(url)
for i in range(count):
    lib.save({"name": "p", "hidden_size": 32, "n_heads": 4, "vocab_size": 100, "max_seq_len": 64,
              "layers": {"n_layers": 1 + i % 2}}, author=f"p{worker}", message=f"{worker}-{i}", name=name)
lib.close()
"""


def test_concurrent_saves_processes(db_url, tmp_path):
    # Plain subprocesses rather than multiprocessing's spawn: spawn re-runs the
    # parent's __main__, which an earlier AppTest in the same session replaces.
    name, n_procs, per_proc = uname("procs"), 4, 8
    Library(db_url).close()  # create the schema once (also exercised concurrently by the workers)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _SAVE_WORKER, db_url, name, str(w), str(per_proc), str(go)],
                              env=env, stderr=subprocess.PIPE, text=True) for w in range(n_procs)]
    go.touch()
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n_procs, errs
    with Library(db_url) as lib:
        revs = lib.revisions(name)
        assert [r.revision for r in revs] == list(range(1, n_procs * per_proc + 1))
        assert sorted(r.message for r in revs) == sorted(f"{w}-{i}" for w in range(n_procs) for i in range(per_proc))
        assert {r.author for r in revs} == {f"p{w}" for w in range(n_procs)}


_KILL_WORKER = r"""
import sys
from backend.library import Library
url, name = sys.argv[1], sys.argv[2]
lib = Library(url)
i = 0
while True:
    info = lib.save({"name": "k", "hidden_size": 32, "n_heads": 4, "vocab_size": 100, "max_seq_len": 64,
                     "description": "x" * (i % 7) * 500, "layers": {"n_layers": 1 + i % 3}},
                    author="killed", message=f"m{i}", name=name)
    print(info.revision, flush=True)
    i += 1
"""


def test_writer_killed_mid_save_leaves_database_readable(db_url):
    name = uname("kill")
    committed: set[int] = set()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(3):  # kill at a different point of the save loop each round
        proc = subprocess.Popen([sys.executable, "-c", _KILL_WORKER, db_url, name], stdout=subprocess.PIPE, env=env, text=True)
        target = len(committed) + 5 + round_
        while len(committed) < target:
            line = proc.stdout.readline()
            assert line, f"worker exited early with {proc.wait()}"
            committed.add(int(line))
        time.sleep(0.003 * round_)  # land inside a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        for line in proc.stdout:  # revisions that were committed and printed before the kill
            if line.strip():
                committed.add(int(line))
        proc.stdout.close()
    if db_url.startswith("sqlite"):
        path = db_url.split("///", 1)[1]
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()
    with Library(db_url) as lib:
        revs = lib.revisions(name)
        numbers = [r.revision for r in revs]
        assert numbers == list(range(1, len(numbers) + 1))  # no gaps, no duplicates
        assert committed <= set(numbers)  # every acknowledged save survived
        for r in revs:
            lib.load(name, r.revision)  # every stored revision parses and validates
        assert lib.save(tiny(), author="after", name=name).revision == len(numbers) + 1


# ---------------------------------------------------------------------------
# CLI


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "BACKEND_DATABASE_URL"}
    env.update(BACKEND_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "backend", "library", *args], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)


def test_cli_library(tmp_path):
    data = tmp_path / "data"
    f1, f2 = tmp_path / "a.yaml", tmp_path / "b.json"
    f1.write_text("name: cli-demo\nhidden_size: 32\nn_heads: 4\nvocab_size: 100\nmax_seq_len: 64\nlayers: {n_layers: 2}\n")
    f2.write_text(json.dumps(tiny(n_layers=3, name="cli-demo")))
    r = _cli(data, "save", str(f1), "--author", "alice", "-m", "first")
    assert r.returncode == 0 and "cli-demo@1" in r.stdout, r.stderr
    r = _cli(data, "save", str(f2), "--author", "bob", "-m", "deeper")
    assert r.returncode == 0 and "cli-demo@2" in r.stdout, r.stderr
    assert (data / "library.db").is_file()
    r = _cli(data, "list", "--json")
    rows = json.loads(r.stdout)
    assert [(x["name"], x["n_revisions"], x["latest"]["author"]) for x in rows] == [("cli-demo", 2, "bob")]
    r = _cli(data, "show", "cli-demo", "--revision", "1")
    assert r.returncode == 0 and "n_layers: 2" in r.stdout and "alice" in r.stdout
    r = _cli(data, "diff", "cli-demo", "1", "2", "--json")
    d = json.loads(r.stdout)
    assert {"field": "layers.n_layers", "a": 2, "b": 3} in d["fields"] and d["plan"]["added"]
    r = _cli(data, "delete", "cli-demo")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "confirmation" in r.stderr
    r = _cli(data, "show", "cli-demo", "--revision", "7")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = _cli(data, "delete", "cli-demo", "--yes")
    assert r.returncode == 0 and "2 revisions" in r.stdout
    r = _cli(data, "list")
    assert r.returncode == 0 and "no designs" in r.stdout


# ---------------------------------------------------------------------------
# The Library page (Streamlit AppTest, no browser)


def test_library_page_load_diff_delete(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    url = f"sqlite:///{tmp_path / 'page.db'}"
    monkeypatch.setenv("BACKEND_DATABASE_URL", url)
    with Library(url) as lib:
        lib.save(tiny(), author="alice", message="one", name="page-demo")
        lib.save(tiny(n_layers=3), author="bob", message="two", name="page-demo")
        first_yaml = lib.get("page-demo", 1).design_yaml
    at = AppTest.from_file(str(ROOT / "app" / "views" / "library.py"), default_timeout=60)
    at.session_state["design_yaml"] = first_yaml
    at.run()
    assert not at.exception and not at.error
    [load] = [b for b in at.button if b.label.startswith("Load page-demo@2")]
    load.click().run()
    assert "n_layers: 3" in at.session_state["design_yaml"]
    assert any("layers.n_layers: 2 -> 3" in c.value for c in at.code)  # the diff tab, as text
    [delete] = [b for b in at.button if b.label == "Delete"]
    assert delete.disabled  # needs the confirm checkbox
    at.checkbox[0].check().run()
    [delete] = [b for b in at.button if b.label == "Delete"]
    delete.click().run()
    assert not at.exception
    with Library(url) as lib:
        assert lib.list() == []
