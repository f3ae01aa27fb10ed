"""Train a design on a probe task for a few steps and report whether it learned.

``run_probe(design, task="mqar", steps=..., seed=...)``:

1. **Adapt** the design to the task (:func:`probe_design`): the same layer
   plan (kinds, order, repetition, flow, norms, positions) as a causal
   token LM with the task's vocabulary and sequence length. An encoder is
   trained as a decoder (the probes are next-token tasks; said so in
   ``notes``); an encoder-decoder is refused.
2. **Scale** it when it has more than ``max_params`` parameters: the
   smoke test's width-scaled copy (``backend.analysis.smoke.scaled_design``:
   head dim 16, at most 4 heads, FFN / experts / features shrunk alike), so
   the probe measures the *mixers*, not a width the CPU cannot train. The
   result says so (``scaled``, ``notes``, ``design``).
3. **Train** the real model (``backend.build.build_model``) with AdamW
   (betas 0.9 / 0.98, weight decay 0.01, linear warm-up over the first 5 %
   of steps then cosine decay to 10 %, gradient clipping at 1), cross-entropy
   on the scored positions plus any MoE auxiliary loss, on CPU (CUDA when
   present). Batches come from :mod:`backend.probe.tasks` by ``(seed, step)``,
   weights from ``torch.manual_seed(seed)``: the same seed gives the same
   losses on the same machine.
4. **Evaluate** argmax accuracy on held-out examples every ``eval_every``
   steps (an accuracy curve) and on ``heldout`` examples at the end.

Numbers reported: the per-step training loss, ``final_loss`` (mean training
loss of the last ``max(1, steps // 20)`` steps, less noisy than the last
one), held-out accuracy and loss, training tokens/s (all positions of the
batch, timed over the optimisation steps only) and wall time (build,
training and evaluation).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import DesignError
from .tasks import IGNORE, SYNTHETIC, Task, Text, chance_accuracy, masked_accuracy

Progress = Callable[[str, float, str], None]
TASKS = ("mqar", "copy", "induction", "text")
TEXT_FILE = Path(__file__).resolve().parent / "data" / "founding_documents.txt"
DEFAULT_STEPS = 800
DEFAULT_BATCH = 32
DEFAULT_LR = 1e-3
DEFAULT_MAX_PARAMS = 2_000_000
EVAL_EXAMPLES = 512
MAX_STEPS = 1_000_000


@dataclass
class ProbeResult:
    name: str  # the design's name as given (before scaling)
    task: str
    task_description: str
    citation: str
    steps: int
    seed: int
    batch_size: int
    seq_len: int
    lr: float
    device: str
    params: int  # parameters of the model that trained
    scaled: bool
    notes: list[str] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # training loss per step
    eval_steps: list[int] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)  # held-out accuracy at eval_steps
    final_loss: float = math.nan
    final_accuracy: float = math.nan  # held-out accuracy after the last step
    heldout_loss: float = math.nan
    chance_accuracy: float = math.nan
    tokens_per_s: float = 0.0
    train_s: float = 0.0
    wall_s: float = 0.0
    design: dict[str, Any] | None = None  # the design that trained (adapted, scaled when scaled)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_task(name: str, **kw: Any) -> Task:
    """The task called ``name`` with its defaults (``kw`` overrides them)."""
    if name == "text":
        return Text(data=TEXT_FILE.read_bytes(), **kw)
    if name not in SYNTHETIC:
        raise DesignError("task", f"must be one of {', '.join(TASKS)}, got {name!r}")
    try:
        return SYNTHETIC[name](**kw)
    except (TypeError, ValueError) as exc:
        raise DesignError("task", str(exc)) from None


# ---------------------------------------------------------------------------
# Design adaptation


def probe_design(design: Any, task: Task, *, max_params: int = DEFAULT_MAX_PARAMS) -> tuple[Any, bool, list[str]]:
    """(Design that trains, scaled?, notes) for ``design`` on ``task`` (module docstring, steps 1-2)."""
    from ..analysis.params import param_stats
    from ..analysis.smoke import scaled_design
    from ..plan import resolve_plan
    from ..spec import load_design

    design = load_design(design)
    notes: list[str] = []
    if design.architecture == "encoder_decoder":
        raise DesignError("architecture", "probes train a decoder-only language model; encoder_decoder designs "
                                          "are not supported")
    d = design.to_dict()
    if design.architecture == "encoder":
        d["architecture"] = "decoder"
        notes.append("encoder trained as a causal decoder (the probes are next-token tasks)")
    if design.task != "lm" or design.vocab_size != task.vocab_size or design.max_seq_len != task.seq_len:
        notes.append(f"trained as a token LM with vocabulary {task.vocab_size} and sequence length {task.seq_len} "
                     f"(design: task {design.task}, vocab {design.vocab_size}, max_seq_len {design.max_seq_len})")
    d.update(task="lm", vocab_size=task.vocab_size, input_dim=None, output_dim=None, max_seq_len=task.seq_len)
    adapted = load_design(d)
    n = param_stats(resolve_plan(adapted))["total"]
    if n <= max_params:
        return adapted, False, notes
    small = scaled_design(adapted)
    small.update(vocab_size=task.vocab_size, max_seq_len=task.seq_len, name=design.name)
    small = load_design(small)
    m = param_stats(resolve_plan(small))["total"]
    notes.append(f"width-scaled: {n:,} parameters exceed the probe limit of {max_params:,}; trained the same layer "
                 f"plan at hidden_size {small.hidden_size} ({small.n_heads} heads, {m:,} parameters) instead of "
                 f"{adapted.hidden_size}")
    return small, True, notes


# ---------------------------------------------------------------------------
# Training


def _lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over 5 % of the steps, then cosine decay to 10 % of ``lr``."""
    warm = max(1, steps // 20)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _loss(model: Any, x: Any, y: Any) -> Any:
    import torch.nn.functional as F

    out = model(x)
    logits = out.output
    ce = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
    return ce + out.aux_loss.float(), logits


def evaluate(model: Any, x: Any, y: Any, *, chunk: int = 128) -> tuple[float, float]:
    """(accuracy, loss) of ``model`` on held-out ``(x, y)`` (argmax over scored positions)."""
    import torch
    import torch.nn.functional as F

    was = model.training
    model.eval()
    correct = scored = 0
    nll = 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            xb, yb = x[i:i + chunk], y[i:i + chunk]
            logits = model(xb).output.float()
            c, n = masked_accuracy(logits, yb)
            correct, scored = correct + c, scored + n
            nll += float(F.cross_entropy(logits.flatten(0, 1), yb.flatten(), ignore_index=IGNORE, reduction="sum"))
    model.train(was)
    return (correct / scored if scored else math.nan), (nll / scored if scored else math.nan)


def run_probe(design: Any, *, task: str | Task = "mqar", steps: int = DEFAULT_STEPS, seed: int = 0,
              batch_size: int = DEFAULT_BATCH, lr: float = DEFAULT_LR, max_params: int = DEFAULT_MAX_PARAMS,
              eval_every: int | None = None, heldout: int = EVAL_EXAMPLES, device: str | None = None,
              progress: Progress | None = None, label: str | None = None) -> ProbeResult:
    """Train ``design`` on ``task`` for ``steps`` AdamW steps and report (module docstring)."""
    import torch

    from ..build import build_model
    from ..spec import load_design

    t_start = time.perf_counter()
    report = progress or (lambda step, fraction, message: None)
    for fld, v, lo, hi in (("steps", steps, 1, MAX_STEPS), ("batch_size", batch_size, 1, 4096),
                           ("heldout", heldout, 1, 100_000)):
        if not isinstance(v, int) or not lo <= v <= hi:
            raise DesignError(fld, f"must be an integer in {lo}..{hi}, got {v!r}")
    if not (isinstance(lr, (int, float)) and 0 < lr < 1):
        raise DesignError("lr", f"must be in (0, 1), got {lr!r}")
    t = make_task(task) if isinstance(task, str) else task
    given = load_design(design)
    name = label or given.name
    report("prepare", 0.0, f"{name}: preparing {t.name}")
    d, scaled, notes = probe_design(given, t, max_params=max_params)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    eval_every = eval_every or max(1, steps // 10)

    torch.manual_seed(seed)
    model = build_model(d, device=dev)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    hx, hy = t.heldout(seed, heldout)
    hx, hy = hx.to(dev), hy.to(dev)
    ex, ey = hx[:min(128, hx.shape[0])], hy[:min(128, hy.shape[0])]  # the cheap curve subset

    result = ProbeResult(name=name, task=t.name, task_description=t.describe(), citation=t.citation, steps=steps,
                         seed=seed, batch_size=batch_size, seq_len=t.seq_len, lr=lr, device=str(dev),
                         params=n_params, scaled=scaled, notes=notes, chance_accuracy=chance_accuracy(t),
                         design=d.to_dict())
    train_s = 0.0
    for step in range(steps):
        x, y = t.batch(seed, step, batch_size)
        x, y = x.to(dev), y.to(dev)
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, steps, lr)
        loss, _ = _loss(model, x, y)
        if not torch.isfinite(loss):
            raise DesignError(name, f"training diverged: loss {loss.item()} at step {step} of {t.name}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        value = float(loss.detach())  # synchronises on CUDA, so train_s is honest
        train_s += time.perf_counter() - t0
        result.losses.append(value)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            acc, _ = evaluate(model, ex, ey)
            result.eval_steps.append(step + 1)
            result.eval_accuracy.append(acc)
            report("train", (step + 1) / steps, f"{name}: step {step + 1}/{steps}, loss {value:.3f}, "
                                                 f"held-out accuracy {acc:.1%}")
    report("evaluate", 1.0, f"{name}: evaluating on {hx.shape[0]} held-out examples")
    result.final_accuracy, result.heldout_loss = evaluate(model, hx, hy)
    tail = result.losses[-max(1, steps // 20):]
    result.final_loss = sum(tail) / len(tail)
    result.train_s = train_s
    result.tokens_per_s = steps * batch_size * t.seq_len / train_s if train_s > 0 else 0.0
    result.wall_s = time.perf_counter() - t_start
    report("done", 1.0, f"{name}: accuracy {result.final_accuracy:.1%} in {result.wall_s:.1f} s")
    return result


def run_probes(designs: Sequence[Any], *, progress: Progress | None = None, **kw: Any) -> list[ProbeResult]:
    """:func:`run_probe` for each design in turn, one progress bar over all of them."""
    out: list[ProbeResult] = []
    n = len(designs)
    for i, d in enumerate(designs):
        def sub(step: str, fraction: float, message: str, i: int = i) -> None:
            if progress:
                progress(step, (i + fraction) / n, message)

        out.append(run_probe(d, progress=sub, **kw))
    return out


# ---------------------------------------------------------------------------
# CLI


def format_results(results: Sequence[ProbeResult]) -> str:
    if not results:
        return ""
    r0 = results[0]
    lines = [f"probe {r0.task} ({r0.task_description}; {r0.steps} steps, batch {r0.batch_size}, seed {r0.seed}, "
             f"{r0.device}; chance {r0.chance_accuracy:.1%})",
             f"{'design':<28} {'params':>10} {'accuracy':>9} {'final loss':>10} {'tokens/s':>10} {'wall s':>7}"]
    for r in results:
        lines.append(f"{r.name[:28]:<28} {r.params:>10,} {r.final_accuracy:>9.1%} {r.final_loss:>10.4f} "
                     f"{r.tokens_per_s:>10,.0f} {r.wall_s:>7.1f}")
        for note in r.notes:
            lines.append(f"  note: {note}")
    return "\n".join(lines)


def cli_probe(args: argparse.Namespace) -> int:
    """The ``probe`` subcommand (arguments defined in ``backend.cli``)."""
    from ..spec import load_design

    designs = [load_design(d) for d in args.design]
    task = make_task(args.task)
    for d in designs:  # every design is adapted (and refused) before any training
        probe_design(d, task, max_params=args.max_params or DEFAULT_MAX_PARAMS)

    def progress(step: str, fraction: float, message: str) -> None:
        if not args.json:
            print(f"[{fraction * 100:3.0f}%] {message}", file=sys.stderr, flush=True)

    given = dict(steps=args.steps, batch_size=args.batch, lr=args.lr, max_params=args.max_params)
    kw: dict[str, Any] = dict(task=task, seed=args.seed, device=args.device,
                              **{k: v for k, v in given.items() if v is not None})  # None: the runner's default
    results = run_probes(designs, progress=progress, **kw)
    if args.json:
        print(json.dumps({"task": args.task, "results": [r.to_dict() for r in results]}))
    else:
        print(format_results(results))
    return 0
