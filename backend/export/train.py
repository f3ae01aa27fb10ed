"""The ``train`` export: a standalone ``train.py`` that trains the design under ``torchrun``.

The file is the standalone model file (:func:`backend.export.standalone.render`,
its entry point dropped), then the probe tasks (``backend/probe/tasks.py``
inlined unchanged: it imports only torch and the standard library), then the
training loop (:data:`TRAIN` below). It imports only torch and the standard
library.

Baked in at export: the design's FLOP count, as training FLOPs per token at
two sequence lengths (``max_seq_len`` and half of it) from the designer's own
analysis (2 FLOPs per multiply-accumulate, attention over the full S x S
matrix, training = forward + backward = 3 x forward: the PaLM / Megatron
convention, Chowdhery et al. 2022 appendix B). Per-token FLOPs are
``a + b * S`` for dense and softmax layers (the attention matrix grows
linearly per token), so the two points give the figure at any ``--seq-len``;
MFU is ``tokens/s * FLOPs/token / (peak FLOP/s * world size)``.

Training semantics (same in one process and under ``torchrun``):

* step ``t`` trains on the global batch ``task.batch(seed, t, global_batch)``
  (``(seed, step)``-seeded, see ``backend.probe.tasks``); rank ``r`` of ``W``
  takes rows ``r*G/W .. (r+1)*G/W``;
* the loss of a rank is its sum of token cross-entropies divided by the
  *global* number of scored tokens, times ``W``; DDP and FSDP2 average
  gradients over ranks, so the update is exactly that of the global mean
  loss, and the logged loss (the rank losses summed over ranks, / ``W``) is
  the global mean; an MoE auxiliary loss is averaged over the ranks' slices;
* weights from ``torch.manual_seed(seed)`` on every rank; AdamW with linear
  warm-up then cosine decay, a pure function of the step; so a checkpoint
  (model, optimizer, step, RNG state) resumes with the losses an
  uninterrupted run would have logged.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from ..errors import DesignError
from ..plan import Plan, resolve_plan
from ..spec import Design
from .standalone import ContractError, _sort_imports, literal, render

TASKS_FILE = Path(__file__).resolve().parent.parent / "probe" / "tasks.py"
_MAIN = "\n\n\ndef main(argv: list[str] | None = None) -> int:\n"  # the model file's entry point, replaced by ours

TRAIN_HEADER = '''\
"""Standalone training script, exported by the transformer architecture designer.

Plain PyTorch: this file imports only torch and the standard library. It holds
the model (the same classes as the designer's ``export --format python``
file), the designer's probe tasks, and a training loop with AdamW.

    python {module}_train.py --task mqar --steps 200                  # one process (CPU or one GPU)
    torchrun --nproc-per-node 8 {module}_train.py --data tokens.bin \\
        --seq-len 1024 --global-batch 256 --parallel fsdp --checkpointing --save ckpt.pt
    python {module}_train.py --help

Data: ``--task mqar|copy|induction`` (seeded synthetic probes) or
``--data FILE`` (a flat binary file of token ids, uint16 by default as in
nanoGPT's ``train.bin``; ``--data-dtype int32`` for larger vocabularies).
Parallelism under torchrun: ``--parallel ddp`` (DistributedDataParallel) or
``fsdp`` (FSDP2 ``fully_shard`` on every block, then the whole model).
bf16 autocast on CUDA (``--dtype``), gradient checkpointing
(``--checkpointing``), checkpoint save (``--save``, every ``--save-every``
steps and at the end) and resume (``--resume``). Logs loss, tokens/s and MFU
by the design's own FLOP count (``FLOPS`` below); ``--log-json FILE`` writes
one JSON line per step.
"""
'''

TRAIN = '''\
# ============================================================================
# Training (torchrun: DDP or FSDP2)
# ============================================================================

# Training FLOPs per token of this design, from the designer's analysis at export:
# 2 FLOPs per multiply-accumulate, attention over the full S x S matrix, training = 3 x forward.
FLOPS = {flops}

# Dense bf16 peak of some accelerators, FLOP/s (vendor datasheets, without sparsity), for MFU.
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}


def flops_per_token(seq_len: int) -> float:
    """Training FLOPs per token at ``seq_len``: a + b * S through the two exported points."""
    (s1, f1), (s2, f2) = FLOPS["per_token"]
    if s1 == s2:
        return float(f1)
    b = (f1 - f2) / (s1 - s2)
    return float(f1 + b * (seq_len - s1))


def peak_flops(device: torch.device, given: float | None) -> float | None:
    if given:
        return given * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in PEAK_FLOPS.items():
            if key in name:
                return value
    return None


@dataclass(frozen=True)
class TokenFile(Task):
    """Random windows of a flat binary token file (next-token prediction on every position)."""

    tokens: torch.Tensor | None = None
    vocab_size: int = 0
    seq_len: int = 1024

    name = "data"

    def sample(self, gen: torch.Generator, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, self.tokens.numel() - self.seq_len - 1, (b,), generator=gen)
        idx = starts[:, None] + torch.arange(self.seq_len + 1)  # (B, S + 1)
        w = self.tokens[idx].long()
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def load_tokens(path: str, dtype: str) -> torch.Tensor:
    """A flat token file as a 1-D int64 tensor (uint16 is read as int16 and unwrapped)."""
    item = {"uint16": 2, "int32": 4}[dtype]
    n = os.path.getsize(path) // item
    raw = torch.from_file(path, shared=False, size=n, dtype=torch.int16 if dtype == "uint16" else torch.int32)
    return (raw.long() & 0xFFFF) if dtype == "uint16" else raw.long()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train the exported design (one process, or torchrun with DDP / FSDP2).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--task", choices=sorted(SYNTHETIC), default=None, help="synthetic probe task (default mqar)")
    src.add_argument("--data", default=None, help="flat binary token file")
    p.add_argument("--data-dtype", choices=("uint16", "int32"), default="uint16")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the task's, or max_seq_len)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--global-batch", type=int, default=32, help="sequences per step over all ranks")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="cosine decays to lr * this")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 5%% of --steps)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp", help="under torchrun: DDP or FSDP2")
    p.add_argument("--find-unused", action="store_true", help="DDP find_unused_parameters (MoE experts with no tokens)")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of every block")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--save", default=None, help="checkpoint path, written every --save-every steps and at the end")
    p.add_argument("--save-every", type=int, default=0)
    p.add_argument("--resume", default=None, help="checkpoint to resume from")
    p.add_argument("--stop-at", type=int, default=None,
                   help="stop (and save) after this step, as if interrupted; the schedule still spans --steps")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--log-json", default=None, help="append one JSON line per step (rank 0)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak TFLOP/s per device for MFU (default: known GPUs)")
    args = p.parse_args(argv)
    for name in ("steps", "global_batch", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def lr_at(step: int, args: argparse.Namespace) -> float:
    warm = args.warmup if args.warmup is not None else max(1, args.steps // 20)
    if step < warm:
        return args.lr * (step + 1) / warm
    t = (step - warm) / max(1, args.steps - warm)
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def make_data(args: argparse.Namespace) -> Task:
    vocab, max_len = CONFIG["vocab_size"], CONFIG["max_seq_len"]
    if args.data:
        if not os.path.isfile(args.data):
            raise SystemExit(f"error: --data: no such file: {args.data}")
        tokens = load_tokens(args.data, args.data_dtype)
        if tokens.numel() and int(tokens.max()) >= vocab:
            raise SystemExit(f"error: --data: token id {int(tokens.max())} >= vocab_size {vocab}")
        task: Task = TokenFile(tokens=tokens, vocab_size=vocab, seq_len=args.seq_len or max_len)
        if tokens.numel() < task.seq_len + 2:
            raise SystemExit(f"error: --data: {tokens.numel()} tokens are too few for --seq-len {task.seq_len}")
    else:
        kw = {"seq_len": args.seq_len} if args.seq_len else {}
        try:
            task = SYNTHETIC[args.task or "mqar"](**kw)
        except ValueError as exc:
            raise SystemExit(f"error: --task: {exc}") from None
        if task.vocab_size > vocab:
            raise SystemExit(f"error: --task {task.name} needs vocab_size >= {task.vocab_size}, the model has {vocab}")
    if task.seq_len > max_len:
        raise SystemExit(f"error: --seq-len {task.seq_len} exceeds the model's max_seq_len {max_len}")
    return task


def setup_distributed(args: argparse.Namespace) -> tuple[int, int, torch.device]:
    """(rank, world size, device); a process group only under torchrun (WORLD_SIZE set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(f"cuda:{local}" if want == "cuda" else want)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if "WORLD_SIZE" in os.environ:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def wrap(model: nn.Module, args: argparse.Namespace, world: int, device: torch.device) -> tuple[nn.Module, str]:
    """DDP, or FSDP2 with one ``fully_shard`` unit per block executed once, then the root."""
    if world == 1 and "WORLD_SIZE" not in os.environ:
        return model, "single process"
    if args.parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(model, device_ids=ids, find_unused_parameters=args.find_unused), f"DDP x {world}"
    from torch.distributed.fsdp import fully_shard

    units = 0
    for stack in model.stacks.values():
        if len(set(stack.order)) == len(stack.order):  # a weight-shared block runs several times: leave it to the root
            for block in stack.blocks:
                fully_shard(block)
                units += 1
    fully_shard(model)
    return model, f"FSDP2 x {world} ({units} block units + root)"


def state_options(full: bool = True):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=full, cpu_offload=True)


def save_checkpoint(path: str, model: nn.Module, opt: torch.optim.Optimizer, step: int, rank: int,
                    args: argparse.Namespace) -> None:
    """Full (unsharded) model and optimizer state, the next step and the RNG state; written by rank 0, atomically."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, opt, options=state_options())
    if rank == 0:
        tmp = path + ".tmp"
        torch.save({"model": msd, "optim": osd, "step": step, "rng": torch.get_rng_state(),
                    "args": vars(args)}, tmp)
        os.replace(tmp, path)


def load_checkpoint(path: str, model: nn.Module, opt: torch.optim.Optimizer) -> int:
    """Restore a checkpoint on every rank; returns the step to continue from."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    ck = torch.load(path, map_location="cpu", weights_only=False)
    set_state_dict(model, opt, model_state_dict=ck["model"], optim_state_dict=ck["optim"],
                   options=state_options())
    torch.set_rng_state(ck["rng"])
    return int(ck["step"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    task = make_data(args)
    rank, world, device = setup_distributed(args)
    dist = None
    if "WORLD_SIZE" in os.environ:
        import torch.distributed as dist
    if args.global_batch % world:
        raise SystemExit(f"error: --global-batch {args.global_batch} is not divisible by the {world} ranks")
    local_batch = args.global_batch // world
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and device.type == "cuda")

    CONFIG["gradient_checkpointing"] = bool(args.checkpointing)
    torch.manual_seed(args.seed)
    model = build_model(device=device)
    model.train()
    n_params = count_parameters(model)
    model, how = wrap(model, args, world, device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    start = load_checkpoint(args.resume, model, opt) if args.resume else 0
    end = min(args.steps, args.stop_at) if args.stop_at else args.steps
    fpt = flops_per_token(task.seq_len)
    peak = peak_flops(device, args.peak_tflops)
    log = open(args.log_json, "a") if (args.log_json and rank == 0) else None
    if rank == 0:
        print(f"{DESIGN.get('name', 'model')}: {n_params:,} parameters; {how} on {device}; "
              f"{task.name} seq {task.seq_len}, global batch {args.global_batch}; "
              f"{'bf16 autocast' if bf16 else 'fp32'}{', checkpointing' if args.checkpointing else ''}; "
              f"{fpt / 1e6:,.1f} MFLOP/token; steps {start}..{end} of {args.steps}", flush=True)

    t_last = time.perf_counter()
    tok_since = 0
    for step in range(start, end):
        x, y = task.batch(args.seed, step, args.global_batch)
        x = x[rank * local_batch:(rank + 1) * local_batch].to(device)
        y = y[rank * local_batch:(rank + 1) * local_batch].to(device)
        scored = (y != IGNORE).sum().to(torch.float64)
        if dist is not None:
            dist.all_reduce(scored)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
        logits = out.output.float()
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
        # DDP / FSDP average gradients over ranks: scale so the update is that of the global mean loss
        loss = ce * (world / scored.clamp_min(1).to(ce.dtype)) + out.aux_loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        value = loss.detach().to(torch.float64)
        if dist is not None:
            dist.all_reduce(value)
        value = float(value) / world
        tok_since += args.global_batch * task.seq_len
        if (step + 1) % args.log_every == 0 or step + 1 == end:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            tps = tok_since / (now - t_last)
            mfu = tps * fpt / (peak * world) if peak else None
            t_last, tok_since = now, 0
            if rank == 0:
                print(f"step {step + 1:>6}  loss {value:.6f}  lr {lr_at(step, args):.2e}  "
                      f"{tps:,.0f} tokens/s" + (f"  MFU {mfu:.1%}" if mfu is not None else ""), flush=True)
        else:
            tps = mfu = None
        if log is not None:
            log.write(json.dumps({"step": step + 1, "loss": value, "lr": lr_at(step, args), "tokens_per_s": tps,
                                  "mfu": mfu}) + "\\n")
            log.flush()
        if args.save and ((args.save_every and (step + 1) % args.save_every == 0) or step + 1 == end):
            save_checkpoint(args.save, model, opt, step + 1, rank, args)
    if log is not None:
        log.close()
    if dist is not None:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''

TRAIN_IMPORTS = ["import argparse", "import json", "import math", "import os", "import sys", "import time",
                 "import torch", "import torch.nn.functional as F", "from torch import nn"]


def _check(plan: Plan) -> None:
    d = plan.design
    if d.architecture != "decoder" or d.task != "lm" or not d.vocab_size:
        raise DesignError("architecture", f"export --format train needs a decoder token LM (architecture decoder, "
                                          f"task lm, vocab_size set), got {d.architecture} / {d.task}")


def baked_flops(plan: Plan) -> dict[str, Any]:
    """Training FLOPs per token at ``max_seq_len`` and half of it (module docstring)."""
    from ..analysis.report import analyze

    s1 = plan.design.max_seq_len
    s2 = max(1, s1 // 2)
    pts = []
    for s in (s1, s2):
        pts.append([s, analyze(plan, seq_len=s, batch=1)["flops"]["training"] / s])
    return {"convention": "2 FLOPs/MAC, full S x S attention, training = 3 x forward", "per_token": pts}


def _model_parts(plan: Plan) -> tuple[list[str], str]:
    """(import lines, body) of the standalone model file without its docstring and entry guard."""
    text = render(plan)
    cut = text.rfind(_MAIN)
    if cut < 0:
        raise ContractError("the standalone file no longer defines main(argv) last")
    text = text[:cut]
    head, _, rest = text.partition("from __future__ import annotations\n\n")
    imports, _, body = rest.partition("\n\n\n")
    return [ln for ln in imports.splitlines() if ln.strip()], body


def _tasks_parts() -> tuple[list[str], str]:
    """(import lines, body) of ``backend/probe/tasks.py``: its docstring becomes a section comment."""
    src = TASKS_FILE.read_text()
    tree = ast.parse(src)
    lines = src.splitlines()
    imports: list[str] = []
    start = 0
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            start = node.end_lineno
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                imports.append(ast.unparse(node))
            start = node.end_lineno
        else:
            break
    doc = ast.get_docstring(tree) or ""
    comment = ["# " + "=" * 76, "# Probe tasks (backend/probe/tasks.py)", "# " + "=" * 76]
    comment += [("# " + ln).rstrip() for ln in doc.splitlines()]
    return imports, "\n".join(comment) + "\n\n" + "\n".join(lines[start:]).strip("\n")


def render_train(design: Design | Plan) -> str:
    """The standalone ``train.py`` for ``design`` (validated with ``compile``)."""
    from .files import module_name

    plan = design if isinstance(design, Plan) else resolve_plan(design)
    _check(plan)
    m_imports, m_body = _model_parts(plan)
    t_imports, t_body = _tasks_parts()
    flops = baked_flops(plan)
    module = module_name(plan.design.name)
    if not re.fullmatch(r"[a-z][a-z0-9_]*", module):
        raise ContractError(f"unsafe module name {module!r}")
    imports = _sort_imports(list(dict.fromkeys(m_imports + t_imports + TRAIN_IMPORTS)))
    text = (TRAIN_HEADER.replace("{module}", module) + "from __future__ import annotations\n\n" + "\n".join(imports)
            + "\n\n\n" + m_body.rstrip("\n") + "\n\n\n" + t_body + "\n\n\n"
            + TRAIN.replace("FLOPS = {flops}", f"FLOPS = {literal(flops, 8)}"))
    try:
        compile(text, "<train export>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise ContractError(f"the generated train.py does not compile: {exc}") from None
    return text


__all__ = ["render_train", "baked_flops"]
