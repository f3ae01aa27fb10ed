"""Smoke test: build real weights, run forward + backward, check what must hold.

``smoke_test(design)`` first *estimates* the memory a real build needs
(fp32 weights + grads from the exact meta-built parameter count, activations
of the small batch without a fused attention kernel, x1.5 for temporaries)
and refuses with :class:`SmokeRefused` when that exceeds the budget (default
half of ``MemAvailable`` in ``/proc/meminfo``). The refusal carries the
estimate, the budget and a *width-scaled* copy of the design: the same layer
plan (kinds, order, repetition, flow) with a small hidden size, heads, FFN
width, experts, random features, parameter tokens and vocabulary, validated
like any design. ``scaled=True`` runs that copy instead. Nothing is
allocated before the decision, so a 70B request is refused in milliseconds.

Checks (B = 2, S = min(max_seq_len, 32) or ``seq_len``, float32, CPU): output shape per
task; finite outputs and loss; every parameter receives a gradient; in causal
stacks, perturbing tokens from position S/2 on leaves the hidden states before
S/2 unchanged (within ``CAUSALITY_RTOL`` of the activations' magnitude);
KV-cached step-by-step decoding equals the full forward pass (decoders and
encoder-decoders with per-token heads). The checks ask the built modules
what they are: a prefix-LM layer's ``bidirectional_prefix`` moves the cut
after the prefix and is prefilled at once; a layer with a
``noncausal_reason`` (MoE capacity routing) makes both checks "not
applicable" with that reason, as does a one-position sequence for
causality. One function per check (``_check_*``). Each step is timed;
peak memory is the growth of the process's peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs`` where allowed, otherwise sampled RSS).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from ..errors import DesignError

Progress = Callable[[str, float, str], None]
BATCH = 2
MAX_SMOKE_SEQ = 32
MAX_SEQ_ARG = 4096  # --seq-len: the cached-decoding check runs one step per position
SAFETY = 1.5  # temporaries, autograd bookkeeping, allocator slack
DEFAULT_FRACTION = 0.5


class SmokeRefused(DesignError):
    """The real build would exceed the memory budget; ``scaled_design`` fits."""

    def __init__(self, estimate_bytes: int, budget_bytes: int, scaled_design: dict[str, Any] | None,
                 scaled_estimate_bytes: int | None, name: str):
        self.estimate_bytes = estimate_bytes
        self.budget_bytes = budget_bytes
        self.scaled_design = scaled_design
        self.scaled_estimate_bytes = scaled_estimate_bytes
        offer = ""
        if scaled_design is not None:
            offer = (f"; rerun with --scaled (scaled=True) to smoke-test the same layer plan at hidden_size "
                     f"{scaled_design['hidden_size']} (~{_gib(scaled_estimate_bytes or 0)})")
        super().__init__(name, f"smoke test needs ~{_gib(estimate_bytes)} but the budget is {_gib(budget_bytes)}{offer}")


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""
    seconds: float = 0.0
    applicable: bool = True  # False: the check cannot judge this design; ``detail`` says why (passed stays True)


@dataclass
class SmokeResult:
    name: str
    passed: bool
    checks: list[Check] = field(default_factory=list)
    scaled: bool = False
    design: dict[str, Any] | None = None  # the design that ran (the scaled copy when scaled)
    params: int = 0
    estimate_bytes: int = 0
    budget_bytes: int = 0
    peak_memory_bytes: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    seq_len: int = 0  # the sequence length that ran (batch BATCH)

    @property
    def timings(self) -> dict[str, float]:
        return {c.name: c.seconds for c in self.checks}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["timings"] = self.timings
        return out


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def available_bytes() -> int:
    """MemAvailable from /proc/meminfo (or 4 GiB when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


# ---------------------------------------------------------------------------
# Estimate and scaling (no torch allocation)


def smoke_shape(design: Any, seq_len: int | None = None) -> tuple[int, int]:
    """(batch, sequence) of the smoke run: ``seq_len`` when asked for, else min(max_seq_len, 32)."""
    return BATCH, seq_len or min(design.max_seq_len, MAX_SMOKE_SEQ)


def check_seq_len(plan: Any, seq_len: int | None) -> None:
    """A DesignError on ``seq_len`` unless the real model runs that length (each kind states its own
    limit: ``backend.plan.length_limits``); a smoke run past a learned table's rows is refused, not clamped."""
    from ..plan import length_limits

    if seq_len is None:
        return
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= MAX_SEQ_ARG:
        raise DesignError("seq_len", f"must be an integer in [1, {MAX_SEQ_ARG}] (the KV-cache check decodes every "
                                     f"position), got {seq_len!r}")
    for lim in length_limits(plan).values():
        if lim and seq_len > lim[0]:
            raise DesignError("seq_len", f"{seq_len} exceeds {lim[0]}, the longest sequence this model accepts "
                                         f"({lim[1]}): the smoke test runs the real model and refuses that length")


def closed_form_params(plan: Any) -> int:
    """Parameters from the kinds' declared closed forms (``param_count``): no module is built, so the
    estimate costs microseconds per layer whatever the experts or widths. Embedding, positions and an
    untied head as the model builds them; flow-speed scalars are left out (a handful of values)."""
    from ..registry import ATTENTION, CROSS, MLP, NORM, POSITIONAL
    from ..spec import TOKEN_TASKS
    from .closed_form import norms_per_layer

    d = plan.design
    n = (d.vocab_size or d.input_dim or 0) * d.hidden_size + POSITIONAL[d.positional].param_count(d)
    if not d.tied:
        n += d.hidden_size * (d.vocab_size if d.task in TOKEN_TASKS else (d.output_dim or 0))
    # encoder models (issue 12): token types, embedding norms, head transform, logit bias
    n += d.type_vocab_size * d.hidden_size
    n += d.embed_norm * len(plan.stacks) * NORM[d.norm].param_count(d)
    if d.head_transform:
        n += d.hidden_size * (d.hidden_size + d.bias) + NORM[d.norm].param_count(d)
    n += d.head_bias * (d.vocab_size or 0)
    for sp in plan.stacks.values():
        n += NORM[d.norm].param_count(d) if d.final_norm else 0  # final norm
        for layer in sp.unique:
            n += ATTENTION[layer.attention].param_count(d, layer.config["attention"], causal=layer.causal)
            n += MLP[layer.mlp].param_count(d, layer.config["mlp"])
            n += norms_per_layer(d, layer) * NORM[layer.norm].param_count(d)
            if layer.cross:
                n += CROSS.param_count(d, layer.config.get("cross", {}), causal=False)
    return n


def estimate_bytes(plan: Any, seq_len: int | None = None) -> int:
    """fp32 weights + grads + activations of the smoke batch, with a safety factor (closed forms only)."""
    from . import memory

    n = closed_form_params(plan)
    b, s = smoke_shape(plan.design, seq_len)
    act = memory.activations(plan, s, b, "fp32", fused_attention=False, checkpointing=False)["total_bytes"]
    return int(SAFETY * (8 * n + act))


def _scale_int(v: int, f: float, lo: int) -> int:
    return max(lo, int(round(v * f)))


def _shrink_params(block: Any, f: float) -> None:
    """Scale width-like layer params in a LayerParams-shaped dict, in place."""
    if not isinstance(block, dict):
        return
    m = block.get("mlp")
    if isinstance(m, dict):
        if isinstance(m.get("hidden"), int):
            m["hidden"] = _scale_int(m["hidden"], f, 8)
        if isinstance(m.get("num_experts"), int):
            k = m.get("top_k", 2) if isinstance(m.get("top_k"), int) else 2
            m["num_experts"] = max(k, min(m["num_experts"], 4))
        if isinstance(m.get("shared_experts"), int):
            m["shared_experts"] = min(m["shared_experts"], 1)
    for cat in ("attention", "cross"):
        a = block.get(cat)
        if isinstance(a, dict):
            if isinstance(a.get("nb_features"), int):
                a["nb_features"] = min(a["nb_features"], 32)
            if isinstance(a.get("num_param_tokens"), int):
                a["num_param_tokens"] = min(a["num_param_tokens"], 16)
            # state-space mixers (mamba2 / mamba): a small state; Mamba-2 heads of 16 channels in one group
            if isinstance(a.get("d_state"), int):
                a["d_state"] = min(a["d_state"], 16)
            if isinstance(a.get("dt_rank"), int) and a["dt_rank"] > 8:
                a["dt_rank"] = 8
            if isinstance(a.get("head_dim"), int) and a["head_dim"] > 16:
                a["head_dim"] = 16
                if isinstance(a.get("n_groups"), int):
                    a["n_groups"] = 1
            if isinstance(a.get("chunk_size"), int):
                a["chunk_size"] = min(a["chunk_size"], 64)
            # Gated DeltaNet: at most 2 key heads (value heads keep their multiple, at most 2x), 16 channels each
            kh, vh = a.get("num_key_heads"), a.get("num_value_heads")
            if isinstance(kh, int) and isinstance(vh, int) and kh > 0 and vh % kh == 0:
                a["num_key_heads"] = min(kh, 2)
                a["num_value_heads"] = a["num_key_heads"] * min(vh // kh, 2)
            for dim in ("key_head_dim", "value_head_dim"):
                if isinstance(a.get(dim), int):
                    a[dim] = min(a[dim], 16)


def _heads(n: int, kv: int) -> tuple[int, int]:
    if kv == n:
        m = min(n, 4)
        return m, m
    if kv == 1:
        return min(n, 4), 1
    r = n // kv
    kv2 = min(kv, 2)
    return kv2 * min(r, 4), kv2


def scaled_design(design: Any, *, head_dim: int = 16) -> dict[str, Any]:
    """The width-scaled copy (module docstring) as a design dict; validated by the caller."""
    d = design.to_dict()
    out = copy.deepcopy(d)
    n, kv = _heads(design.n_heads, design.kv_heads)
    dh = min(design.attn_head_dim, head_dim)
    dh += dh % 2
    hidden = n * dh
    f = hidden / design.hidden_size
    out.update(hidden_size=hidden, n_heads=n, n_kv_heads=None if kv == n else kv, head_dim=None)
    out["mlp_hidden"] = _scale_int(design.ffn_hidden, f, 8)
    if design.vocab_size:
        out["vocab_size"] = min(design.vocab_size, 256)
    if design.output_dim and design.output_dim > 256 and design.task not in ("cluster_centers",):
        out["output_dim"] = 256
    out["name"] = f"{design.name}-scaled"
    for key in ("layers", "encoder", "decoder"):
        st = out.get(key)
        if not isinstance(st, dict):
            continue
        _shrink_params(st.get("params"), f)
        for rule in st.get("rules") or []:
            _shrink_params(rule.get("params"), f)
        for entry in st.get("explicit") or []:
            _shrink_params(entry.get("params"), f)
        fl = st.get("flow")
        if isinstance(fl, dict) and isinstance(fl.get("hidden"), int):
            fl["hidden"] = min(fl["hidden"], 16)
    return out


def budget_for(budget_bytes: int | None) -> int:
    return int(budget_bytes if budget_bytes is not None else DEFAULT_FRACTION * available_bytes())


# ---------------------------------------------------------------------------
# Memory measurement


class _Peak:
    """Peak RSS growth during the run."""

    def __init__(self) -> None:
        self.reset_ok = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset_ok = True
        except OSError:
            pass
        self.base = self._rss()
        self.samples = [self.base]

    @staticmethod
    def _status(key: str) -> int:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _rss(self) -> int:
        return self._status("VmRSS:")

    def sample(self) -> None:
        self.samples.append(self._rss())

    def peak_growth(self) -> int:
        peak = max(self.samples)
        if self.reset_ok:
            peak = max(peak, self._status("VmHWM:"))
        return max(0, peak - self.base)


# ---------------------------------------------------------------------------
# The run


def smoke_test(design: Any, *, budget_bytes: int | None = None, scaled: bool = False,
               progress: Progress | None = None, seed: int = 0, seq_len: int | None = None) -> SmokeResult:
    """Run the smoke test (module docstring); raises :class:`SmokeRefused` over budget.

    ``seq_len``: the sequence length to run (default min(max_seq_len, 32)); a length the real model
    refuses (past a learned position table, a spectral filter's taps) is a DesignError on ``seq_len``."""
    from ..plan import resolve_plan
    from ..spec import load_design

    t_start = time.perf_counter()
    report = progress or (lambda step, fraction, message: None)
    report("estimate", 0.0, "estimating memory")
    design = load_design(design)
    plan = resolve_plan(design)
    check_seq_len(plan, seq_len)
    budget = budget_for(budget_bytes)
    est = estimate_bytes(plan, seq_len)
    ran_scaled = False
    if est > budget or scaled:
        small = None
        small_est = None
        for dh in (16, 8, 4, 2):
            cand = scaled_design(design, head_dim=dh)
            small_plan = resolve_plan(cand)
            small_est = estimate_bytes(small_plan, seq_len)
            small = cand
            if small_est <= budget:
                break
        if not scaled:
            raise SmokeRefused(est, budget, small, small_est, design.name)
        if small_est is not None and small_est > budget:
            raise SmokeRefused(est, budget, None, small_est, f"{design.name} (even the scaled copy needs ~{_gib(small_est)})")
        if est > budget or scaled:
            design, plan, est, ran_scaled = load_design(small), small_plan, small_est, True
    result = SmokeResult(design.name, False, scaled=ran_scaled, design=design.to_dict(), estimate_bytes=est, budget_bytes=budget,
                         seq_len=smoke_shape(design, seq_len)[1])
    if seq_len is not None:
        from ..plan import length_warning

        if (warning := length_warning(plan, seq_len)) is not None:  # past max_seq_len, within what the model runs
            result.warnings.append(warning)
    _run_checks(design, plan, result, report, seed, seq_len)
    result.passed = all(c.passed for c in result.checks)
    result.seconds = time.perf_counter() - t_start
    report("done", 1.0, "passed" if result.passed else "failed: " + ", ".join(c.name for c in result.checks if not c.passed))
    return result


def _inputs(design: Any, b: int, s: int, gen: Any) -> Any:
    import torch

    if design.vocab_size:
        return torch.randint(0, design.vocab_size, (b, s), generator=gen)
    return torch.randn(b, s, design.input_dim, generator=gen)


def _perturb(design: Any, x: Any, start: int, gen: Any) -> Any:
    import torch

    y = x.clone()
    if design.vocab_size:
        y[:, start:] = (y[:, start:] + 1 + torch.randint(0, design.vocab_size - 1, y[:, start:].shape, generator=gen)) % design.vocab_size
    else:
        y[:, start:] = y[:, start:] + torch.randn(y[:, start:].shape, generator=gen)
    return y


def _expected_shape(design: Any, b: int, s: int) -> tuple[int, ...]:
    t = design.task
    if t in ("lm", "mlm", "seq2seq"):
        return (b, s, design.vocab_size)
    if t in ("sequence", "cluster_assignments"):
        return (b, s, design.output_dim)
    if t == "cluster_centers":
        return (b, design.output_dim, design.input_dim)
    return (b, design.output_dim)


class NotApplicable(Exception):
    """Raised by a check that cannot say anything about this design; the reason is shown instead."""


@dataclass
class _Run:
    """What the checks of one smoke run share: the design, inputs, the built model and the last forward."""

    design: Any
    result: SmokeResult
    peak: _Peak
    gen: Any
    b: int
    s: int
    model: Any = None
    x: Any = None
    tgt: Any = None
    out: Any = None

    @property
    def encdec(self) -> bool:
        return self.design.architecture == "encoder_decoder"

    @property
    def causal(self) -> bool:
        return self.design.architecture in ("decoder", "encoder_decoder")

    def forward(self) -> Any:
        return self.model(self.x, self.tgt) if self.encdec else self.model(self.x)

    def decoder_hidden(self, tgt: Any) -> Any:
        """Hidden states of the causal stack for ``tgt`` (the decoder's targets, or a decoder's tokens)."""
        if self.encdec:
            return self.model.decode(tgt, self.model.encode(self.x)).hidden
        return self.model(tgt).hidden

    # Facts the causal stack's modules state about themselves (backend/nn/: a module
    # without the attribute has none): see ``bidirectional_prefix`` and ``noncausal_reason``.

    def bidirectional_prefix(self) -> int:
        """Leading positions that attend bidirectionally (prefix-LM), the most any layer of the causal stack has."""
        return max((int(getattr(m, "bidirectional_prefix", 0) or 0) for m in self.model.decoding_stack.modules()), default=0)

    def noncausal_reason(self) -> str | None:
        """Why the causal stack's full forward is not causal by construction, if a module says so."""
        reasons = dict.fromkeys(r for m in self.model.decoding_stack.modules() if (r := getattr(m, "noncausal_reason", None)))
        return "; ".join(reasons) or None


# float32 round-off before the cut grows with depth and activation magnitude (FFT
# convolutions, prefix sums): 8e-4 at magnitude 5 was seen in a deep spectral stack, i.e.
# 1.6e-4 relative. A real leak moves earlier positions by the order of the change after
# the cut (O(1) relative), so a tolerance relative to the activations separates the two.
CAUSALITY_RTOL = 1e-3
KV_CACHE_RTOL = 1e-4


def _check_build(run: _Run) -> tuple[bool, str]:
    from ..build import build_model

    run.model = build_model(run.design, device="cpu", init=True)
    n = sum(p.numel() for p in run.model.parameters())
    run.result.params = n
    return True, f"{n:,} parameters"


def _check_forward_backward(run: _Run) -> tuple[bool, str]:
    import torch

    run.model.train()
    t0 = time.perf_counter()
    run.out = run.forward()
    fwd = time.perf_counter() - t0
    loss = run.out.output.float().pow(2).mean() + run.out.aux_loss.float()
    if not torch.isfinite(loss):
        return False, f"loss is {loss.item()}"
    t0 = time.perf_counter()
    loss.backward()
    bwd = time.perf_counter() - t0
    return True, f"forward {fwd * 1e3:.1f} ms, backward {bwd * 1e3:.1f} ms"


def _check_output_shape(run: _Run) -> tuple[bool, str]:
    got = tuple(run.out.output.shape)
    want = _expected_shape(run.design, run.b, run.s)
    return got == want, f"output {got}, expected {want} for task {run.design.task}"


def _check_finite(run: _Run) -> tuple[bool, str]:
    import torch

    bad = [n for n, p in run.model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    ok = bool(torch.isfinite(run.out.output).all()) and not bad
    return ok, "outputs and gradients finite" if ok else f"non-finite output or gradients in {bad[:5]}"


def _check_gradients(run: _Run) -> tuple[bool, str]:
    missing = [n for n, p in run.model.named_parameters() if p.requires_grad and p.grad is None]
    # an MoE expert that the router sent no token in this tiny batch gets no gradient: a warning, not a failure
    unrouted = [n for n in missing if ".mlp.experts." in n]
    hard = [n for n in missing if n not in unrouted]
    if unrouted:
        run.result.warnings.append(f"{len(unrouted)} expert parameter(s) got no tokens in the smoke batch: {unrouted[:3]}")
    n_all = sum(1 for _ in run.model.parameters())
    return not hard, f"{n_all - len(missing)}/{n_all} parameter tensors received a gradient" + (f"; missing: {hard[:5]}" if hard else "")


def _check_causality(run: _Run) -> tuple[bool, str]:
    """Perturb the causal stack's tokens from ``cut`` on; hidden states before ``cut`` must not move.

    A prefix-LM layer lets the first ``bidirectional_prefix`` positions see each
    other, so the cut goes after the prefix.
    """
    import torch

    reason = run.noncausal_reason()
    if reason:
        raise NotApplicable(reason)
    if run.s < 2:
        raise NotApplicable(f"needs at least 2 positions, the smoke sequence has {run.s} (max_seq_len {run.design.max_seq_len})")
    prefix = run.bidirectional_prefix()
    cut = max(1, run.s // 2, prefix)
    if cut >= run.s:
        raise NotApplicable(f"the whole smoke sequence ({run.s} tokens) lies in the bidirectional prefix ({prefix} tokens)")
    seq = run.tgt if run.encdec else run.x
    with torch.no_grad():
        h1 = run.decoder_hidden(seq)
        h2 = run.decoder_hidden(_perturb(run.design, seq, cut, run.gen))
    diff = (h1[:, :cut] - h2[:, :cut]).abs().max().item()
    changed = (h1[:, cut:] - h2[:, cut:]).abs().max().item()
    scale = max(1.0, h1.abs().max().item(), h2.abs().max().item())
    after_prefix = f" (after the {prefix}-token bidirectional prefix)" if prefix else ""
    return diff <= CAUSALITY_RTOL * scale, (f"max change before position {cut}{after_prefix}: {diff:.2e} "
                                           f"(tolerance {CAUSALITY_RTOL:g} x magnitude {scale:.2g}; after: {changed:.2e})")


def _check_kv_cache(run: _Run) -> tuple[bool, str]:
    """Decoding with the cache (the bidirectional prefix prefilled at once, then token by token) equals the full pass."""
    import torch

    reason = run.noncausal_reason()
    if reason:
        raise NotApplicable(reason)
    model, s = run.model, run.s
    prefix = min(run.bidirectional_prefix(), s)
    with torch.no_grad():
        seq = run.tgt if run.encdec else run.x
        mem = model.encode(run.x) if run.encdec else None
        full = model.decode(run.tgt, mem).output if run.encdec else model(run.x).output
        cache = model.new_cache(run.b, s)
        bounds = [0] + list(range(max(prefix, 1), s + 1))  # chunk [lo, hi): the prefix, then one token each
        outs = []
        for lo, hi in zip(bounds, bounds[1:]):
            kw = {"memory": mem} if (run.encdec and lo == 0) else {}
            outs.append(model.forward_one_step(seq[:, lo:hi], cache, lo, **kw))
        stepwise = torch.cat(outs, dim=1)
    scale = max(1.0, full.abs().max().item())
    diff = (full - stepwise).abs().max().item()
    mode = "recompute" if getattr(cache, "recompute", False) else "cached"
    prefill = f", the {prefix}-token bidirectional prefix prefilled at once" if prefix > 1 else ""
    return diff <= KV_CACHE_RTOL * scale, f"max |full - step-by-step| = {diff:.2e} over {s} steps ({mode}{prefill})"


def _step(run: _Run, report: Progress, name: str, fraction: float, fn: Callable[[_Run], tuple[bool, str]]) -> bool:
    """Run one check, time it and record it; a failing module fails the check, never crashes the caller."""
    report(name, fraction, name.replace("_", " "))
    t0 = time.perf_counter()
    applicable = True
    try:
        ok, detail = fn(run)
    except NotApplicable as na:
        ok, detail, applicable = True, f"not applicable: {na}", False
    except Exception as exc:  # noqa: BLE001
        ok, detail = False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    run.peak.sample()
    run.result.checks.append(Check(name, bool(ok), detail, time.perf_counter() - t0, applicable))
    return ok


def _run_checks(design: Any, plan: Any, result: SmokeResult, report: Progress, seed: int,
                seq_len: int | None = None) -> None:
    import torch

    torch.manual_seed(seed)
    b, s = smoke_shape(design, seq_len)
    run = _Run(design, result, _Peak(), torch.Generator().manual_seed(seed), b, s)
    try:
        if not _step(run, report, "build", 0.05, _check_build):
            return
        run.x = _inputs(design, b, s, run.gen)
        if run.encdec:
            run.tgt = torch.randint(0, design.vocab_size, (b, s), generator=run.gen) if design.vocab_size else _inputs(design, b, s, run.gen)
        if not _step(run, report, "forward_backward", 0.3, _check_forward_backward):
            return
        _step(run, report, "output_shape", 0.4, _check_output_shape)
        _step(run, report, "finite", 0.45, _check_finite)
        _step(run, report, "gradients", 0.5, _check_gradients)
        run.model.zero_grad(set_to_none=True)
        run.model.eval()
        if run.causal:
            _step(run, report, "causality", 0.65, _check_causality)
        per_token = design.task in ("lm", "seq2seq", "sequence", "cluster_assignments")
        if run.causal and per_token and hasattr(run.model, "new_cache") and hasattr(run.model, "forward_one_step"):
            _step(run, report, "kv_cache", 0.85, _check_kv_cache)
    finally:
        result.peak_memory_bytes = run.peak.peak_growth()


# ---------------------------------------------------------------------------
# CLI


def format_result(r: SmokeResult) -> str:
    lines = [f"smoke test {r.name}{' (width-scaled)' if r.scaled else ''}: {'PASSED' if r.passed else 'FAILED'}"
             f" in {r.seconds:.2f} s; {r.params:,} parameters; batch {BATCH} x {r.seq_len} positions; peak memory +{_gib(r.peak_memory_bytes)}"
             f" (estimate {_gib(r.estimate_bytes)}, budget {_gib(r.budget_bytes)})"]
    for c in r.checks:
        mark = "n/a" if not c.applicable else "ok" if c.passed else "FAIL"
        lines.append(f"  [{mark}] {c.name:<17} {c.seconds * 1e3:8.1f} ms  {c.detail}")
    for w in r.warnings:
        lines.append(f"  warning: {w}")
    return "\n".join(lines)


def cli_smoke(args: argparse.Namespace) -> int:
    budget = None if getattr(args, "budget_gb", None) is None else int(args.budget_gb * 2**30)

    def progress(step: str, fraction: float, message: str) -> None:
        # stderr in both modes (--json keeps stdout to the one JSON object): the app's
        # child-process runner (smoke_service) shows these lines as its progress
        print(f"[{fraction * 100:3.0f}%] {message}", file=sys.stderr, flush=True)

    try:
        r = smoke_test(args.design, budget_bytes=budget, scaled=args.scaled, progress=progress,
                       seq_len=getattr(args, "seq_len", None))
    except SmokeRefused as exc:
        if args.json:
            print(json.dumps({"refused": True, "message": str(exc), "estimate_bytes": exc.estimate_bytes,
                              "budget_bytes": exc.budget_bytes, "scaled_design": exc.scaled_design,
                              "scaled_estimate_bytes": exc.scaled_estimate_bytes}))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(r.to_dict()))
    else:
        print(format_result(r))
    return 0 if r.passed else 1
