"""Mamba-2, Mamba and Gated DeltaNet speed: the chunked forms against the sequential recurrences, and linear growth in length.

    python benchmarks/bench_ssm.py [--hidden 256] [--d-state 64] [--threads N]

Prints, in one run: the forward time of the SSD scan in chunked form (the
training path of ``backend.nn.mamba2``) against the token-by-token recurrence
(its decode step applied S times) at seq 4096, and the chunked full-layer
forward time at 8k over 1k tokens (linear: about 8x; quadratic would be 64x).
The same two figures for ``mamba`` (Mamba-1, ``backend.nn.mamba``: chunked
associative scan against its decode step applied S times; d_state 16), and
for ``gated_deltanet`` (``backend.nn.gated_deltanet``: the chunkwise form with
its UT transform against the gated delta rule's decode step applied S times;
4 value heads of 64 x 64 state, chunk 64).
CPU, float32, batch 1, best of a few repeats.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.nn.common import LayerContext  # noqa: E402
from backend.nn.gated_deltanet import GatedDeltaNet, gated_delta_chunked, gated_delta_step, l2norm  # noqa: E402
from backend.nn.mamba import Mamba, scan_step, selective_scan  # noqa: E402
from backend.nn.mamba2 import Mamba2, ssd_chunked, ssd_step  # noqa: E402


def best(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--d-state", type=int, default=64)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    params = {"d_state": args.d_state, "d_conv": 4, "expand": 2, "head_dim": args.head_dim, "n_groups": 1,
              "chunk_size": args.chunk}
    ctx = LayerContext(hidden_size=args.hidden, n_heads=1, n_kv_heads=1, head_dim=args.hidden, ffn_hidden=1,
                       params=params)
    m = Mamba2(ctx).eval()
    H, P, N = m.n_heads, m.head_dim, m.d_state
    s = 4096
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, s, H, P, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(1, s, H, generator=g) - 3)
    A = -torch.exp(m.A_log.detach())
    B, C = torch.randn(1, s, 1, N, generator=g), torch.randn(1, s, 1, N, generator=g)

    def sequential():
        state = x.new_zeros(1, H, P, N)
        for t in range(s):
            _, state = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], state)

    with torch.no_grad():
        y_c, st_c = ssd_chunked(x, dt, A, B, C, args.chunk)
        t_chunk = best(lambda: ssd_chunked(x, dt, A, B, C, args.chunk))
        t_seq = best(sequential, repeats=1)
        t = {n: best(lambda n=n: m(torch.randn(1, n, args.hidden, generator=g))) for n in (1024, 8192)}
    print(f"mamba2 (D={args.hidden}, heads={H}, head_dim={P}, d_state={N}, chunk={args.chunk}), "
          f"CPU {torch.get_num_threads()} threads, float32, batch 1")
    print(f"  scan at seq {s}: chunked {t_chunk * 1e3:.1f} ms, sequential {t_seq * 1e3:.1f} ms "
          f"-> {t_seq / t_chunk:.1f}x faster")
    print(f"  full layer forward: 1k {t[1024] * 1e3:.1f} ms, 8k {t[8192] * 1e3:.1f} ms "
          f"-> 8k/1k = {t[8192] / t[1024]:.2f}x (linear: 8x)")
    bench_mamba(args, g)
    bench_gated_deltanet(args, g)
    return 0


def bench_mamba(args, g: torch.Generator) -> None:
    """Mamba-1: chunked scan vs its decode step S times at 4096; full layer 8k / 1k."""
    params = {"d_state": 16, "d_conv": 4, "expand": 2, "dt_rank": 0, "bc_norm": False, "chunk_size": 64}
    ctx = LayerContext(hidden_size=args.hidden, n_heads=1, n_kv_heads=1, head_dim=args.hidden, ffn_hidden=1,
                       params=params)
    m = Mamba(ctx).eval()
    E, N, s = m.d_inner, m.d_state, 4096
    x = torch.randn(1, s, E, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(1, s, E, generator=g) - 3)
    A = -torch.exp(m.A_log.detach())
    B, C = torch.randn(1, s, N, generator=g), torch.randn(1, s, N, generator=g)

    def sequential():
        state = x.new_zeros(1, E, N)
        for t in range(s):
            _, state = scan_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], state)

    with torch.no_grad():
        t_chunk = best(lambda: selective_scan(x, dt, A, B, C, 64))
        t_seq = best(sequential, repeats=1)
        t = {n: best(lambda n=n: m(torch.randn(1, n, args.hidden, generator=g))) for n in (1024, 8192)}
    print(f"mamba (D={args.hidden}, d_inner={E}, d_state={N}, chunk=64)")
    print(f"  scan at seq {s}: chunked {t_chunk * 1e3:.1f} ms, sequential {t_seq * 1e3:.1f} ms "
          f"-> {t_seq / t_chunk:.1f}x faster")
    print(f"  full layer forward: 1k {t[1024] * 1e3:.1f} ms, 8k {t[8192] * 1e3:.1f} ms "
          f"-> 8k/1k = {t[8192] / t[1024]:.2f}x (linear: 8x)")


def bench_gated_deltanet(args, g: torch.Generator) -> None:
    """Gated DeltaNet: chunkwise form vs its decode step S times at 4096; full layer 8k / 1k."""
    params = {"num_key_heads": 2, "num_value_heads": 4, "key_head_dim": 64, "value_head_dim": 64, "conv_kernel": 4,
              "chunk_size": 64}
    ctx = LayerContext(hidden_size=args.hidden, n_heads=1, n_kv_heads=1, head_dim=args.hidden, ffn_hidden=1,
                       params=params)
    m = GatedDeltaNet(ctx).eval()
    H, dk, dv, s = 4, 64, 64, 4096
    q = l2norm(torch.randn(1, s, H, dk, generator=g)) * dk ** -0.5
    k = l2norm(torch.randn(1, s, H, dk, generator=g))
    v = torch.randn(1, s, H, dv, generator=g)
    beta = torch.rand(1, s, H, generator=g)
    gate = -torch.nn.functional.softplus(torch.randn(1, s, H, generator=g))

    def sequential():
        state = v.new_zeros(1, H, dk, dv)
        for t in range(s):
            _, state = gated_delta_step(q[:, t], k[:, t], v[:, t], beta[:, t], gate[:, t], state)

    with torch.no_grad():
        t_chunk = best(lambda: gated_delta_chunked(q, k, v, beta, gate, 64))
        t_seq = best(sequential, repeats=1)
        t = {n: best(lambda n=n: m(torch.randn(1, n, args.hidden, generator=g))) for n in (1024, 8192)}
    print(f"gated_deltanet (D={args.hidden}, {H} value heads, state {dk}x{dv}, chunk=64)")
    print(f"  delta rule at seq {s}: chunked {t_chunk * 1e3:.1f} ms, sequential {t_seq * 1e3:.1f} ms "
          f"-> {t_seq / t_chunk:.1f}x faster")
    print(f"  full layer forward: 1k {t[1024] * 1e3:.1f} ms, 8k {t[8192] * 1e3:.1f} ms "
          f"-> 8k/1k = {t[8192] / t[1024]:.2f}x (linear: 8x)")


if __name__ == "__main__":
    raise SystemExit(main())
