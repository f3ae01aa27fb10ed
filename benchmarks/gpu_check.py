"""GPU smoke checks (run by hand on a CUDA machine; never in CI).

    python benchmarks/gpu_check.py [--quick]

For every preset (width-scaled where the full model is large) builds the model
on CUDA, runs forward + backward in bf16 (autocast) and fp32, and checks
finiteness and gradients; compares SDPA kernels (flash / efficient / math) on
one layer; checks KV-cached greedy generation against the full forward; and
cross-checks the analysis' forward FLOPs against FlopCounterMode on real CUDA
tensors (where the SDPA kernels do have formulas), then times a bf16 training
step to report achieved TFLOP/s from our count.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.analysis.report import analyze  # noqa: E402
from backend.analysis.smoke import scaled_design  # noqa: E402
from backend.build import build_model  # noqa: E402
from backend.presets import list_presets  # noqa: E402
from backend.spec import load_design  # noqa: E402


def inputs(d, b: int, s: int, dev):
    if d.vocab_size is not None:
        return torch.randint(0, d.vocab_size, (b, s), device=dev)
    return torch.randn(b, s, d.input_dim, device=dev)


def run(model, d, x, tgt=None):
    return model(x, tgt).output if tgt is not None else model(x).output


def check_presets(dev, b: int = 2, s: int = 64) -> list[str]:
    failures = []
    for name in list_presets():
        d = load_design(name)
        if analyze(d)["params"]["unique"] > 400_000_000:
            d = load_design(scaled_design(d))
        s_eff = min(s, d.max_seq_len)
        for mode in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = build_model(d, device=dev)
            x = inputs(d, b, s_eff, dev)
            tgt = torch.randint(0, d.vocab_size, (b, s_eff), device=dev) if d.architecture == "encoder_decoder" else None
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=(mode == "bf16")):
                out = run(model, d, x, tgt)
                loss = out.float().pow(2).mean()
            loss.backward()
            no_grad = [n for n, p in model.named_parameters() if p.grad is None]
            finite = bool(torch.isfinite(out.float()).all())
            status = "ok" if finite and not no_grad else f"FAIL finite={finite} no_grad={no_grad[:3]}"
            if status != "ok":
                failures.append(f"{name}/{mode}")
            print(f"  {name:<24} {mode}  out {tuple(out.shape)}  {status}")
            del model
    return failures


def check_sdpa_kernels(dev) -> list[str]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    failures = []
    d = {"name": "k", "hidden_size": 512, "n_heads": 8, "n_kv_heads": 2, "max_seq_len": 512, "vocab_size": 1000,
         "layers": {"n_layers": 2}}
    torch.manual_seed(0)
    model = build_model(d, device=dev, dtype=torch.bfloat16)
    x = inputs(load_design(d), 2, 256, dev)
    ref = None
    for backend in (SDPBackend.MATH, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        with torch.no_grad(), sdpa_kernel([backend]):
            out = model(x).output.float()
        if ref is None:
            ref = out
        diff = (out - ref).abs().max().item()
        ok = diff < 5e-2 * ref.abs().max().item()
        print(f"  sdpa {backend.name:<20} max|diff| vs math {diff:.3e}  {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"sdpa/{backend.name}")
    return failures


def check_generation(dev) -> list[str]:
    failures = []
    for name in ("gemma2_style", "diff_transformer", "autoregressive_moe", "mistral_7b", "encdec_kv_cache"):
        if name not in list_presets():
            continue
        d = load_design(scaled_design(load_design(name)))
        torch.manual_seed(0)
        model = build_model(d, device=dev, dtype=torch.float32).eval()
        prompt = torch.randint(0, d.vocab_size, (2, 5), device=dev)
        src = torch.randint(0, d.vocab_size, (2, 7), device=dev) if d.architecture == "encoder_decoder" else None
        with torch.no_grad():
            gen = model.generate(prompt, 12, src=src) if src is not None else model.generate(prompt, 12)
            full = model(src, gen).output if src is not None else model(gen).output
        # greedy: each generated token is the argmax of the full forward at the previous position
        agree = (full[:, 4:-1].argmax(-1) == gen[:, 5:]).float().mean().item()
        ok = agree == 1.0
        print(f"  generate {name:<22} cached-vs-full argmax agreement {agree:.3f}  {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"generate/{name}")
    return failures


def check_flops_and_speed(dev) -> list[str]:
    from torch.utils.flop_counter import FlopCounterMode

    failures = []
    for name, b, s in (("gpt2_small", 8, 1024), ("llama2_7b", 1, 2048)):
        d = load_design(name)
        model = build_model(d, device=dev, dtype=torch.bfloat16)
        x = inputs(d, b, s, dev)
        ours = analyze(d, seq_len=s, batch=b)["flops"]
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
        traced = fc.get_total_flops()
        rel = abs(traced - ours["forward"]) / ours["forward"]
        ok = rel < 0.005
        print(f"  {name}: analysis forward {ours['forward']:.4e}  CUDA FlopCounterMode {traced:.4e}  rel diff {rel:.2e}  {'ok' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"flops/{name}")
        # timing a bf16 training step (forward + backward) -> achieved TFLOP/s by our training count
        opt_params = [p for p in model.parameters()]
        for _ in range(2):
            model(x).output.float().mean().backward()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        n = 5
        for _ in range(n):
            model(x).output.float().mean().backward()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / n
        print(f"  {name}: train step {dt * 1e3:.1f} ms, {ours['training'] / dt / 1e12:.1f} TFLOP/s (dense count), "
              f"{ours['training_causal'] / dt / 1e12:.1f} TFLOP/s (causal-aware), {b * s / dt:,.0f} tokens/s")
        del model, opt_params
        torch.cuda.empty_cache()
    return failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device")
        return 2
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}")
    failures: list[str] = []
    print("presets forward/backward:")
    failures += check_presets(dev)
    print("SDPA kernels:")
    failures += check_sdpa_kernels(dev)
    print("KV-cached generation:")
    failures += check_generation(dev)
    if not args.quick:
        print("FLOPs vs CUDA trace, speed:")
        failures += check_flops_and_speed(dev)
    print(f"{len(failures)} failed: {failures}" if failures else "all GPU checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
