"""FLOP measurement on the meta device: ``FlopCounterMode`` plus what it cannot see.

``torch.utils.flop_counter.FlopCounterMode`` counts matmuls, convolutions and
attention kernels. On the meta device ``F.scaled_dot_product_attention``
decomposes into two ``bmm`` (scores, values) and is counted exactly; on CPU
tensors its fused kernel has no formula and counts zero, so everything here
runs on meta. FFTs have no formula at all; :data:`FFT_FORMULAS` registers the
conventional ``5 N log2 N`` real FLOPs per complex N-point transform
(``2.5 N log2 N`` for a real-input / real-output one; see ``closed_form``).

:func:`count` runs a callable under the counter (a light dispatch mode applying
``FlopCounterMode``'s own per-operator formulas, see :class:`_LightCounter`;
the full ``FlopCounterMode`` for higher-order operators such as
FlexAttention) and returns the total and a per-operator breakdown; the zero-FLOP check in the tests relies on every
kind's work landing in one of these operators.

Complex matmuls (FrequencyAttention's per-mode mixing, an einsum over complex
spectra that decomposes into a complex ``bmm``): ``FlopCounterMode``'s
formulas read shapes only and count 2 per multiply-accumulate whatever the
dtype; a complex multiply-accumulate is 4 real ones, so the light counter
multiplies matmul-like ops with a complex operand by 4 (the FFT formulas
already count real FLOPs). Only the light counter does this; the
``FlopCounterMode`` fallback (higher-order operators on real devices, never
on meta) keeps torch's shape-only count.

Triangular solves (``torch.linalg.solve_triangular``, the UT transform of
Gated DeltaNet's chunkwise form) have no formula either; :data:`SOLVE_FORMULAS`
counts forward / back substitution at 2 FLOPs per multiply-accumulate:
``n (n - 1) / 2`` per right-hand column for a unit triangle, ``n (n + 1) / 2``
(the diagonal divides counted as multiply-accumulates) otherwise.

Plain reductions (``sum``), ``cumsum`` and element-wise ops have no formula
and count zero by the DESIGN.md section 5 convention; the closed forms
(``closed_form``) follow the same rule, so the two agree by construction of
the convention, not of the code.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry, shape_wrapper

aten = torch.ops.aten


def _points(shape: Any, dims: Any) -> tuple[int, int]:
    """(transform size N, number of transforms) for an FFT over ``dims`` of ``shape``."""
    shape = list(shape)
    n = 1
    for d in dims:
        n *= shape[d]
    total = 1
    for x in shape:
        total *= x
    return n, (total // n if n else 0)


def _nlogn(n: int, c: float) -> float:
    return c * n * math.log2(n) if n > 1 else 0.0


def _fft_r2c(x_shape, dim, normalization, onesided, *args, out_shape=None, **kwargs) -> int:
    n, batch = _points(x_shape, dim)
    return int(round(batch * _nlogn(n, 2.5)))


def _fft_c2r(x_shape, dim, normalization, last_dim_size, *args, out_shape=None, **kwargs) -> int:
    n, batch = _points(out_shape, dim)  # the real output has the full length
    return int(round(batch * _nlogn(n, 2.5)))


def _fft_c2c(x_shape, dim, normalization, forward, *args, out_shape=None, **kwargs) -> int:
    n, batch = _points(x_shape, dim)
    return int(round(batch * _nlogn(n, 5.0)))


FFT_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._fft_r2c: _fft_r2c,
    aten._fft_c2r: _fft_c2r,
    aten._fft_c2c: _fft_c2c,
}


def _solve_triangular(a_shape, b_shape, *args, upper=False, left=True, unitriangular=False, out_shape=None, **kwargs) -> int:
    """``linalg_solve_triangular(A (.., n, n), B)``: per batch and right-hand column, n(n -+ 1)/2 MACs."""
    n = a_shape[-1]
    rows, cols = out_shape[-2], out_shape[-1]
    batch = 1
    for x in out_shape[:-2]:
        batch *= x
    columns = cols if left else rows
    macs = n * (n - 1) // 2 if unitriangular else n * (n + 1) // 2
    return 2 * batch * columns * macs


SOLVE_FORMULAS: dict[Any, Callable[..., int]] = {aten.linalg_solve_triangular: _solve_triangular}


class _LightCounter(TorchDispatchMode):
    """``FlopCounterMode``'s own formulas (``flop_registry``) in a plain dispatch mode.

    ``FlopCounterMode`` wraps its dispatch in ``torch._disable_dynamo``, whose
    first call imports torch._dynamo (~1 s, most of a cold CLI run). This mode
    opts out of that wrapping (``_should_skip_dynamo``; we never compile) and
    applies the same per-operator formulas. Higher-order operators (e.g.
    FlexAttention) are not supported here; :func:`count` retries those under
    the real ``FlopCounterMode``.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False

    def __init__(self) -> None:
        super().__init__()
        self.per_op: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = _FORMULAS.get(packet)
        if formula is not None:
            n = int(formula(*args, **kwargs, out_val=out))
            if packet not in FFT_FORMULAS and _complex(args):
                n *= 4  # a complex multiply-accumulate is 4 real ones (module docstring)
            if n:
                key = str(packet)
                self.per_op[key] = self.per_op.get(key, 0) + n
        return out


def _complex(args: Any) -> bool:
    return any(isinstance(a, torch.Tensor) and a.is_complex() for a in args)


_EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {**FFT_FORMULAS, **SOLVE_FORMULAS}
_FORMULAS: dict[Any, Callable[..., int]] = {**flop_registry, **{k: shape_wrapper(v) for k, v in _EXTRA_FORMULAS.items()}}


def count(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
    """Run ``fn(*args, **kwargs)`` under the FLOP counter: (total, {op name: flops})."""
    try:
        with torch.no_grad(), _LightCounter() as mode:
            fn(*args, **kwargs)
        return sum(mode.per_op.values()), dict(mode.per_op)
    except Exception:  # e.g. a higher-order operator: the full FlopCounterMode handles those
        pass
    with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as fmode:
        with torch.no_grad():
            fn(*args, **kwargs)
    per_op = {str(op): int(v) for op, v in fmode.get_flop_counts().get("Global", {}).items()}
    return int(fmode.get_total_flops()), per_op


def meta_input(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, device="meta", dtype=dtype)
