"""Independent FLOP counters, for tests and the benchmark (not used by ``analyze``).

* :func:`fvcore_forward_flops`: fvcore's JIT-trace counter on a real model,
  with a handle for ``aten::scaled_dot_product_attention`` (fvcore reports it
  as unsupported and counts zero otherwise), its norm handles switched off
  (element-wise work is not counted here). fvcore counts one "flop" per
  multiply-accumulate, so the result is doubled to our convention.
* :func:`whole_model_meta_flops`: one ``FlopCounterMode`` trace of the whole
  model built on meta (what ``analyze`` avoids by tracing each distinct layer
  once).
"""
from __future__ import annotations

from typing import Any


def _sdpa_macs(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    *batch, sq, dh = q
    sk, dv = k[-2], v[-1]
    n = 1
    for x in batch:
        n *= x
    return n * sq * sk * dh + n * sq * sk * dv  # scores + values


def fvcore_forward_flops(model: Any, inputs: tuple[Any, ...]) -> int:
    """fvcore's forward count (x2: MACs -> FLOPs) with an SDPA handle."""
    from fvcore.nn import FlopCountAnalysis

    fca = FlopCountAnalysis(model, inputs)
    fca.set_op_handle("aten::scaled_dot_product_attention", _sdpa_macs)
    # fvcore also counts normalisation per element; our convention counts matmul work only.
    # (A zero handle, not None: fvcore 0.1.5 keeps a default handle even when told to ignore the op.)
    for op in ("aten::layer_norm", "aten::group_norm", "aten::batch_norm", "aten::instance_norm"):
        fca.set_op_handle(op, lambda inputs, outputs: 0)
    fca.unsupported_ops_warnings(False)
    fca.uncalled_modules_warnings(False)
    return 2 * int(fca.total())


def whole_model_meta_flops(design: Any, seq_len: int, batch: int = 1) -> int:
    """Build the whole model on meta and count one forward pass with ``FlopCounterMode``."""
    import torch

    from ..build import build_model
    from ..spec import load_design
    from .counting import count

    d = load_design(design)
    model = build_model(d, device="meta")
    if d.vocab_size:
        x = torch.empty(batch, seq_len, dtype=torch.long, device="meta")
    else:
        x = torch.empty(batch, seq_len, d.input_dim, device="meta")
    if d.architecture == "encoder_decoder":
        tgt = torch.empty(batch, seq_len, dtype=torch.long, device="meta") if d.vocab_size else x
        return count(model, x, tgt)[0]
    return count(model, x)[0]
