"""Smoke test: refusal (fast, no allocation, scaled alternative), a passing tiny run, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from backend.analysis import smoke
from backend.analysis.smoke import SmokeRefused, scaled_design, smoke_test
from backend.errors import DesignError
from backend.plan import resolve_plan
from backend.presets import find_preset
from backend.registry import ATTENTION
from backend.spec import load_design


def _loads(info) -> bool:
    info.load()  # every registered kind must import; an error here fails the run
    return True


needs_sdpa = pytest.mark.skipif(not _loads(ATTENTION["self_sdpa"]), reason="backend.nn.attention not written yet")

SEVENTY_B = {
    "name": "llama2-70b-shape", "architecture": "decoder", "task": "lm", "vocab_size": 32000, "hidden_size": 8192,
    "n_heads": 64, "n_kv_heads": 8, "mlp_hidden": 28672, "max_seq_len": 4096, "tie_embeddings": False,
    "layers": {"n_layers": 80, "attention": "self_sdpa", "mlp": "swiglu"},
}


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@needs_sdpa
def test_70b_refused_fast_without_allocating():

    before = _rss()
    t0 = time.process_time()  # CPU time: a busy machine can't flake it
    with pytest.raises(SmokeRefused) as info:
        smoke_test(SEVENTY_B, budget_bytes=8 * 2**30)
    elapsed = time.process_time() - t0
    assert elapsed < 1.0
    assert _rss() - before < 200 * 2**20  # nothing like 276 GB (or even 1 GB) was touched
    exc = info.value
    assert isinstance(exc, DesignError)
    assert exc.estimate_bytes > 8 * 69e9 and exc.budget_bytes == 8 * 2**30
    assert "--scaled" in str(exc)
    small = load_design(exc.scaled_design)  # a valid design
    big_plan, small_plan = resolve_plan(SEVENTY_B), resolve_plan(small)
    assert [(x.attention, x.mlp, x.norm, x.unique_index) for x in big_plan.layers] == \
           [(x.attention, x.mlp, x.norm, x.unique_index) for x in small_plan.layers]
    assert small.hidden_size < 8192 and small.n_heads % small.kv_heads == 0 and small.kv_heads < small.n_heads
    assert exc.scaled_estimate_bytes < 8 * 2**30


def test_scaled_design_keeps_the_plan_for_every_preset():
    from backend.presets import list_presets

    for name in list_presets():
        d = load_design(name)
        small = load_design(scaled_design(d))
        a, b = resolve_plan(d), resolve_plan(small)
        assert [(x.stack, x.attention, x.mlp, x.norm, x.unique_index) for x in a.layers] == \
               [(x.stack, x.attention, x.mlp, x.norm, x.unique_index) for x in b.layers], name
        assert small.hidden_size <= d.hidden_size


def test_default_budget_is_half_of_available():
    assert smoke.budget_for(None) == int(0.5 * smoke.available_bytes())
    assert smoke.available_bytes() > 0


TINY = {"name": "tiny-lm", "architecture": "decoder", "task": "lm", "vocab_size": 50, "hidden_size": 32, "n_heads": 4,
        "n_kv_heads": 2, "max_seq_len": 16, "layers": {"n_layers": 2, "attention": "self_sdpa", "mlp": "swiglu",
                                                       "repeat": {"mode": "cycle", "factor": 2}}}


@needs_sdpa
def test_tiny_decoder_passes_with_progress():
    seen = []
    r = smoke_test(TINY, progress=lambda step, fraction, message: seen.append((step, fraction)))
    assert r.passed, [c for c in r.checks if not c.passed]
    names = [c.name for c in r.checks]
    assert {"build", "forward_backward", "output_shape", "finite", "gradients", "causality", "kv_cache"} <= set(names)
    assert seen[0][1] == 0.0 and seen[-1] == ("done", 1.0)
    assert all(c.seconds >= 0 for c in r.checks) and r.peak_memory_bytes >= 0
    json.dumps(r.to_dict())


@needs_sdpa
def test_encoder_decoder_and_encoder_pass():
    stack = {"n_layers": 1, "attention": "self_sdpa", "mlp": "swiglu"}
    ed = {**{k: v for k, v in TINY.items() if k != "layers"}, "name": "ed", "architecture": "encoder_decoder",
          "task": "seq2seq", "encoder": stack, "decoder": stack}
    r = smoke_test(ed)
    assert r.passed, [c for c in r.checks if not c.passed]
    assert "kv_cache" in [c.name for c in r.checks]
    enc = {**TINY, "name": "enc", "architecture": "encoder", "task": "classification", "output_dim": 3, "tie_embeddings": False}
    r = smoke_test(enc)
    assert r.passed and "causality" not in [c.name for c in r.checks]


@needs_sdpa
def test_scaled_run_when_over_budget():
    r = smoke_test({**TINY, "hidden_size": 256, "n_heads": 8, "name": "wide"}, budget_bytes=2 * 2**20, scaled=True)
    assert r.scaled and r.design["hidden_size"] < 256 and r.passed


def test_cli_smoke_refusal_exit_2(repo_root):
    if find_preset("llama2_70b") is None:
        pytest.fail("presets/llama2_70b.yaml missing")
    out = subprocess.run([sys.executable, "-m", "backend", "smoke", "llama2_70b", "--budget-gb", "4"], cwd=repo_root,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "--scaled" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------------------
# Checks that must judge the model, not themselves (issue 14, finding 3)


def _check(r, name):
    (c,) = [c for c in r.checks if c.name == name]
    return c


@needs_sdpa
def test_causality_on_a_single_position_is_not_applicable():
    r = smoke_test({**TINY, "name": "one-token", "max_seq_len": 1})
    assert r.passed, [c for c in r.checks if not c.passed]
    c = _check(r, "causality")
    assert not c.applicable and "2 positions" in c.detail
    assert _check(r, "kv_cache").applicable  # one cached step vs the full pass is still a real check


def test_causality_tolerance_follows_activation_magnitude():
    # A deep causal spectral stack: float32 FFT round-off reaches positions before the
    # cut at ~1e-5 absolute (activations ~3); no information flows backwards.
    deep = {**TINY, "name": "deep-spectral", "hidden_size": 64, "max_seq_len": 32, "init_std": 0.5,
            "layers": {"n_layers": 24, "attention": "spectral", "params": {"attention": {"adaptive": True}}}}
    r = smoke_test(deep)
    assert _check(r, "causality").passed, _check(r, "causality").detail
    assert r.passed, [c for c in r.checks if not c.passed]


@needs_sdpa
def test_causality_still_catches_a_real_leak(monkeypatch):
    import backend.build

    real = backend.build.build_model

    def leaky(*args, **kwargs):  # every self-attention of the decoder made bidirectional
        model = real(*args, **kwargs)
        for m in model.modules():
            if hasattr(m, "causal") and hasattr(m, "q_proj"):
                m.causal = False
        return model

    monkeypatch.setattr(backend.build, "build_model", leaky)
    r = smoke_test(TINY)
    assert not _check(r, "causality").passed and not _check(r, "kv_cache").passed


def test_prefix_lm_prefix_is_bidirectional_in_causality_and_cache_checks():
    for prefix in (6, 12):  # before and after the default cut (S/2 = 8)
        d = {**TINY, "name": f"prefix-lm-{prefix}",
             "layers": {"n_layers": 2, "attention": "self_flex", "params": {"attention": {"prefix_len": prefix}}}}
        r = smoke_test(d)
        assert r.passed, (prefix, [c for c in r.checks if not c.passed])
        assert _check(r, "causality").applicable and _check(r, "kv_cache").applicable
        assert "prefix" in _check(r, "causality").detail and "prefix" in _check(r, "kv_cache").detail
    whole = {**TINY, "name": "prefix-lm-all", "layers": {"n_layers": 1, "attention": "self_flex",
                                                          "params": {"attention": {"prefix_len": 16}}}}
    r = smoke_test(whole)
    assert r.passed and not _check(r, "causality").applicable and "prefix" in _check(r, "causality").detail


@needs_sdpa
def test_moe_capacity_in_a_decoder_is_reported_not_failed():
    d = {**TINY, "name": "moe-capacity", "layers": {"n_layers": 2, "mlp": "moe", "params": {
        "mlp": {"num_experts": 4, "top_k": 2, "capacity_factor": 1.0}}}}
    r = smoke_test(d)
    assert r.passed, [c for c in r.checks if not c.passed]
    for name in ("causality", "kv_cache"):
        c = _check(r, name)
        assert not c.applicable and "capacity" in c.detail, c
    assert any("capacity" in w for w in resolve_plan(d).warnings)
    uncapped = smoke_test({**d, "layers": {**d["layers"], "params": {"mlp": {"num_experts": 4, "top_k": 2}}}})
    assert uncapped.passed and _check(uncapped, "kv_cache").applicable
    assert not any("capacity" in w for w in resolve_plan({**d, "architecture": "encoder", "task": "mlm"}).warnings)


# ---------------------------------------------------------------------------
# Shared-server runs (issue 14, finding 9): bounded queue, per-run memory, cancellation


def test_queue_bounds_concurrent_runs_and_keeps_order():
    import threading

    from backend.analysis.smoke_service import SmokeQueue

    q = SmokeQueue(max_running=2)
    lock = threading.Lock()
    active, peak, order, seen_ahead = [0], [0], [], {}

    def job(i: int) -> None:
        def tick(ahead: int) -> None:
            seen_ahead.setdefault(i, ahead)

        with q.slot(tick, poll_s=0.01):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                order.append(i)
            time.sleep(0.05)
            with lock:
                active[0] -= 1

    threads = []
    for i in range(6):
        threads.append(threading.Thread(target=job, args=(i,)))
        threads[-1].start()
        time.sleep(0.005)  # arrival order 0, 1, 2, ...
    for t in threads:
        t.join(10)
    assert peak[0] == 2 and sorted(order) == list(range(6))
    assert order == sorted(order)  # first come, first served
    assert all(a >= 1 for a in seen_ahead.values()) and max(seen_ahead.values()) >= 3
    assert q.running == 0 and q.waiting == 0


def test_cancelled_waiter_leaves_the_queue():
    import threading

    from backend.analysis.smoke_service import SmokeQueue

    q = SmokeQueue(max_running=1)
    release = threading.Event()

    def holder():
        with q.slot():
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    while q.running == 0:
        time.sleep(0.01)

    class SessionEnded(Exception):
        pass

    def tick(ahead):
        raise SessionEnded

    with pytest.raises(SessionEnded):
        with q.slot(tick, poll_s=0.01):
            pytest.fail("must not run")
    assert q.waiting == 0 and q.running == 1
    release.set()
    t.join(5)
    assert q.running == 0


@pytest.mark.slow
def test_process_run_reports_its_own_memory_and_is_killed_on_cancel():
    import os

    from backend.analysis.smoke_service import run_smoke_process

    steps = []
    out = run_smoke_process(TINY, progress=lambda step, fraction, message: steps.append(fraction))
    r = out["result"]
    assert r["passed"] and steps[0] == 0.0 and steps[-1] == 1.0
    # the child's own peak growth: a tiny model, nowhere near this (torch-importing) test process's RSS
    assert 0 <= r["peak_memory_bytes"] < 200 * 2**20

    refused = run_smoke_process(SEVENTY_B, budget_bytes=2**30)["refused"]
    assert refused["budget_bytes"] == 2**30 and refused["scaled_design"]

    class SessionEnded(Exception):
        pass

    pids = []

    def tick():
        pids.extend(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_smoke_child(p))
        raise SessionEnded

    with pytest.raises(SessionEnded):
        run_smoke_process(TINY, tick=tick)
    assert pids, "the child was running when the session ended"
    time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{p}") and _is_smoke_child(str(p)) for p in pids)


def _is_smoke_child(pid: str) -> bool:
    import os

    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return False
    return ppid == os.getpid() and b"smoke" in cmd and b"backend" in cmd


def test_run_budget_is_shared_between_admitted_runs():
    from backend.analysis.smoke_service import run_budget_bytes

    one, three = run_budget_bytes(1), run_budget_bytes(3)
    assert abs(one - smoke.budget_for(None)) < 64 * 2**20  # MemAvailable moves a little between reads
    assert abs(three - one / 3) < 64 * 2**20


@pytest.mark.parametrize("name", ["tiny", "gpt2_small", "llama2_7b", "mixtral_8x7b", "t5_style", "performer_encdec",
                                  "regression", "medium_cycle", "diff_transformer", "timeseries_encoder",
                                  "hybrid_mamba2_small"])
def test_closed_form_estimate_params_match_the_meta_model(name):
    """The smoke estimate sizes a design from the kinds' closed forms, before any module exists."""
    from backend.analysis.smoke import closed_form_params
    from backend.build import build_model
    from backend.plan import resolve_plan

    plan = resolve_plan(name)
    exact = sum(p.numel() for p in build_model(plan, device="meta").parameters())
    # exact for the layers; task heads' biases and flow-speed predictors are left out of the estimate
    assert abs(closed_form_params(plan) - exact) <= max(4096, exact // 100)
    layers = sum(p.numel() for n, p in build_model(plan, device="meta").named_parameters() if ".blocks." in n)
    from backend.registry import ATTENTION, MLP, NORM

    d = plan.design
    declared = sum(ATTENTION[u.attention].param_count(d, u.config["attention"], causal=u.causal)
                   + MLP[u.mlp].param_count(d, u.config["mlp"])
                   + (3 if u.cross else 2) * (2 if d.norm_placement == "pre_post" else 1) * NORM[u.norm].param_count(d)
                   + (ATTENTION["self_sdpa"].param_count(d, {}, causal=False) if u.cross else 0)
                   for sp in plan.stacks.values() for u in sp.unique)
    assert declared == layers


@pytest.mark.slow
def test_smoke_refuses_a_huge_valid_design_fast_and_small():
    """1,000 distinct MoE layers x 1,024 experts: refused from closed forms, no meta build (issue: hardening, finding 1)."""
    import resource
    import time

    from backend.analysis.smoke import SmokeRefused

    design = {"name": "huge", "vocab_size": 1000, "hidden_size": 64, "n_heads": 4, "max_seq_len": 64,
              "layers": {"n_layers": 1000, "mlp": "moe", "params": {"mlp": {"num_experts": 1024, "top_k": 2}},
                         "rules": [{"when": {"layer_idx": [i]}, "params": {"mlp": {"hidden": 64 + i}}} for i in range(1000)]}}
    t0 = time.process_time()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SmokeRefused):
        smoke_test(design, budget_bytes=2**30)
    assert time.process_time() - t0 < 30  # generous bound: it is closed-form arithmetic (~1 s here)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 400 * 1024  # KiB: no 5 GB meta build


def test_seq_len_runs_that_length_and_refuses_what_the_model_refuses(repo_root, tmp_path):
    """--seq-len: a rotary design runs past 32 positions (the checks see that length); a learned table of
    max_seq_len rows refuses a longer run with a one-line error naming seq_len, before anything is built."""
    rotary = {"name": "r", "hidden_size": 16, "n_heads": 2, "vocab_size": 37, "max_seq_len": 48,
              "layers": {"n_layers": 1}}
    r = smoke_test(rotary, seq_len=40)
    assert r.passed and r.seq_len == 40 and r.warnings == []
    r = smoke_test(rotary, seq_len=56)  # rotary extrapolates: it runs, with the analysis' warning
    assert r.passed and r.seq_len == 56 and any("max_seq_len 48" in w for w in r.warnings)
    learned = {**rotary, "positional": "learned"}
    with pytest.raises(DesignError, match="seq_len") as err:
        smoke_test(learned, seq_len=49)
    assert "48" in str(err.value) and "\n" not in str(err.value)
    # the model itself refuses that length: the independent reference for the refusal
    import torch
    from backend.build import build_model
    with pytest.raises(ValueError, match="max_seq_len"):
        build_model(learned, device="cpu")(torch.zeros(1, 49, dtype=torch.long))
    for bad in (0, 10**6, "7"):
        with pytest.raises(DesignError, match="seq_len"):
            smoke_test(rotary, seq_len=bad)
    path = tmp_path / "learned.json"
    path.write_text(json.dumps(learned))
    out = subprocess.run([sys.executable, "-m", "backend", "smoke", str(path), "--seq-len", "64"], cwd=repo_root,
                         capture_output=True, text=True, timeout=120)
    errors = [line for line in out.stderr.splitlines() if not line.startswith("[")]  # progress lines start with [
    assert out.returncode == 2 and len(errors) == 1 and "seq_len: 64 exceeds 48" in errors[0], out.stderr
    assert "Traceback" not in out.stderr
