"""Activation memory: what backward keeps alive, measured as built and by Korthikanti et al.

Two figures for the same shape:

(a) **As built** (:func:`as_built`): the bytes autograd saves for backward in
    one forward of this project's model, measured with
    ``torch.autograd.graph.saved_tensors_hooks`` on the real module of each
    *distinct* layer (``parts``' key: model settings + layer config), counting
    each storage once and leaving out parameters and buffers. It runs on the
    meta device, so a 70B design costs no memory, and is cached per
    (distinct layer, batch, seq, dtype): 80 executed layers of one kind are
    measured once. Meta tensors save the same tensors as real CPU tensors
    (tests/test_training_plan.py checks every registered attention and MLP
    kind) with one exception handled here: on meta,
    ``F.scaled_dot_product_attention`` always takes the math kernel, which
    saves the S x S probabilities, while the CPU (and CUDA) picks a fused
    kernel that saves only the log-sum-exp. :class:`_HostKernels` asks torch
    which kernel the CPU would pick for the same dtype, mask, causality and
    dropout (``torch._fused_sdp_choice`` on a tiny CPU copy) and runs that
    kernel's op on meta. MoE routing is data-dependent; its meta path deals
    the ``N * top_k`` slots evenly and otherwise runs the ops of the real path
    (``backend.nn.moe``), so the saved bytes match real data up to imbalance.

    Per layer the bytes are split into *replicated* (saved outside the token
    mixer and the MLP, plus their inputs: norms, residual, dropout masks --
    what tensor parallelism does not shard) and *sharded* (inside them), and
    the part that grows with S^2 (from a second measurement at S/2: bytes =
    a S + c S^2) is reported as ``quadratic_bytes`` -- what selective
    recomputation (recompute the attention core) gives back.

    Outside the layers: the embedding (token indices, dropout masks), each
    stack's final norm, the head, the flow-speed predictor, and the encoder
    output once for every cross-attention layer of an encoder-decoder.
    ``loss_bytes`` (cross-entropy on fp32 logits, what ``log_softmax`` keeps)
    is reported beside the total, not in it: the model's forward stops at
    the logits.

(b) **Korthikanti et al. 2022** (:func:`korthikanti_layer_bytes`), "Reducing
    Activation Recomputation in Large Transformer Models", arXiv 2205.05198,
    table 2: 16-bit activations, 1-byte dropout masks, per layer

    ======================================  ==============================
    no parallelism                          s b h (34 + 5 a s / h)
    tensor parallel t                       s b h (10 + 24/t + 5 a s/(h t))
    t + sequence parallel                   s b h / t (34 + 5 a s / h)
    t + selective recompute                 s b h (10 + 24/t)
    t + SP + selective recompute            34 s b h / t
    full recompute                          2 s b h
    ======================================  ==============================

    With pipeline parallelism p and the 1F1B schedule the first stage keeps
    p micro-batches in flight for L/p layers: L layers' worth in total
    (section 4.2.3), times ``1 + (p - 1) / (p v)`` for an interleaved schedule
    of v model chunks per stage.

Recompute modes of the as-built figure: ``none``; ``selective`` (the S^2
part dropped); ``full`` (each layer keeps only its input, B S D elements, and
one layer's full set is alive while it is recomputed during backward).
"""
from __future__ import annotations

import json
import threading
from functools import lru_cache
from typing import Any

RECOMPUTE = ("none", "selective", "full")
# the cached meta blocks get forward hooks while measured: one measurement at a time (app sessions share them)
_MEASURING = threading.Lock()
_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "int8": "bfloat16"}  # int8: bf16 training


def _torch_dtype(dtype: str):
    import torch

    if dtype not in _TORCH_DTYPES:
        from ..errors import DesignError

        raise DesignError("dtype", f"must be one of {', '.join(_TORCH_DTYPES)}, got {dtype!r}")
    return getattr(torch, _TORCH_DTYPES[dtype])


# ---------------------------------------------------------------------------
# Measurement


def _key(t) -> int:
    """Identity of a tensor's storage (views share it; meta tensors have one too)."""
    return t.untyped_storage()._cdata


class _Recorder:
    """Saved-tensor hooks that note each storage once, with the region that saved it first.

    Storages are told apart by address, so the recorder holds every tensor it was
    shown until it is dropped: a saved tensor whose graph dies mid-forward (a
    router's discarded top-k values, say) would otherwise free its storage, and a
    later storage at the same address would read as already seen (counts that
    depended on the allocator's history, so on which tests ran before).
    """

    def __init__(self, exclude: set[int]):
        self.exclude = set(exclude)
        self.seen: dict[int, tuple[int, str]] = {}
        self.region = "replicated"
        self._held: list = []

    def pack(self, t):
        k = _key(t)
        self._held.append(t)
        if k not in self.exclude and k not in self.seen:
            self.seen[k] = (t.untyped_storage().nbytes(), self.region)
        return t

    def hooks(self):
        import torch

        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)

    def total(self, region: str | None = None) -> int:
        return sum(n for n, r in self.seen.values() if region is None or r == region)


def _host_kernels():
    """A TorchFunctionMode that runs SDPA on meta with the kernel the CPU would choose (module docstring)."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    flash = int(torch.nn.attention.SDPBackend.FLASH_ATTENTION)

    def tiny(t, like: list[int] | None = None):
        if t is None:
            return None
        shape = [1] * (t.dim() - 2) + [min(2, n) for n in t.shape[-2:]] if like is None else like
        return torch.zeros(shape, dtype=t.dtype)

    class _HostKernels(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention and args and args[0].is_meta:
                q, k, v = args[:3]
                mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
                dropout_p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
                is_causal = kwargs.get("is_causal", args[5] if len(args) > 5 else False)
                scale = kwargs.get("scale")
                # same head and head-dim sizes, 2 positions: what the kernel choice looks at
                tq = torch.zeros(1, q.shape[1], min(2, q.shape[2]), q.shape[3], dtype=q.dtype)
                tk = torch.zeros(1, k.shape[1], min(2, k.shape[2]), k.shape[3], dtype=k.dtype)
                tv = torch.zeros(1, v.shape[1], min(2, v.shape[2]), v.shape[3], dtype=v.dtype)
                tm = None
                if mask is not None:
                    shape = [1 if n == 1 else m for n, m in zip(mask.shape[-4:], (1, q.shape[1], tq.shape[2], tk.shape[2]))]
                    tm = torch.zeros([1] * (4 - len(shape)) + shape, dtype=mask.dtype)
                choice = torch._fused_sdp_choice(tq, tk, tv, tm, dropout_p, is_causal, scale=scale)
                if choice == flash:
                    with torch._C.DisableTorchFunction():
                        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                            q, k, v, dropout_p, is_causal, attn_mask=mask, scale=scale)[0]
            return func(*args, **kwargs)

    return _HostKernels()


@lru_cache(maxsize=256)
def _meta_block(mkey: str, lkey: str, causal: bool, cross: bool, flow_key: str, dtype: str):
    """(Block, FlowSpeed) on meta in ``dtype``, training mode; never initialised."""
    import torch

    from ..analysis.parts import _import
    from ..nn.model import Block, FlowSpeed, complete_config

    cfg = complete_config(json.loads(mkey))
    layer = json.loads(lkey)
    _import({**cfg, "stacks": {"s": {"cross": cross, "layers": [layer]}}})
    with torch.device("meta"):
        blk = Block(cfg, layer, causal=causal, cross=cross, index=0, n_layers=1, depth=1)
        flow = FlowSpeed(json.loads(flow_key), cfg["hidden_size"], 1)
    return blk.to(_torch_dtype(dtype)).train(), flow.to(_torch_dtype(dtype)).train()


def _params_and_buffers(*modules) -> set[int]:
    return {_key(t) for m in modules for t in list(m.parameters()) + list(m.buffers())}


def _run_hooked(blk, flow, x, memory, rec: _Recorder, sub: list, enter, leave) -> None:
    """One recorded forward of a block (and its flow speed), with the region hooks on its sub-layers."""
    handles = [m.register_forward_pre_hook(enter) for m in sub] + [m.register_forward_hook(leave) for m in sub]
    try:
        with rec.hooks(), _host_kernels():
            rec.region = "flow"
            s = flow(x, 0)
            rec.region = "replicated"
            rec.exclude.discard(_key(x))
            blk(x, s, memory=memory)
    finally:
        for h in handles:
            h.remove()


def _measure_block(mkey: str, lkey: str, causal: bool, cross: bool, flow_key: str, batch: int, seq: int,
                   dtype: str) -> dict[str, int]:
    import torch

    blk, flow = _meta_block(mkey, lkey, causal, cross, flow_key, dtype)
    dt = _torch_dtype(dtype)
    d = json.loads(mkey)["hidden_size"]
    x = torch.empty(batch, seq, d, device="meta", dtype=dt, requires_grad=True)
    memory = torch.empty(batch, seq, d, device="meta", dtype=dt, requires_grad=True) if cross else None
    rec = _Recorder(_params_and_buffers(blk, flow) | ({_key(memory)} if cross else set()))
    # the flow predictor reads the block input, which the block saves anyway: count it there
    rec.exclude.add(_key(x))
    sub = [m for m in (blk.attn, blk.cross, blk.mlp) if m is not None]
    inputs: set[int] = set()

    def enter(module, args):
        inputs.add(_key(args[0]))
        rec.region = "sharded"

    def leave(module, args, out):
        rec.region = "replicated"

    with _MEASURING:
        _run_hooked(blk, flow, x, memory, rec, sub, enter, leave)
    # a sub-layer's input (the norm output) stays whole on every tensor-parallel rank
    for k in inputs:
        if k in rec.seen:
            rec.seen[k] = (rec.seen[k][0], "replicated")
    return {
        "bytes": rec.total(),
        "replicated_bytes": rec.total("replicated") + rec.total("flow"),
        "sharded_bytes": rec.total("sharded"),
        "input_bytes": batch * seq * d * x.element_size(),
    }


@lru_cache(maxsize=4096)
def layer_saved(mkey: str, lkey: str, causal: bool, cross: bool, flow_key: str, batch: int, seq: int,
                dtype: str, quadratic: bool = False) -> dict[str, int]:
    """Saved bytes of one distinct layer (module docstring); ``quadratic`` adds the S^2 part (a second run at S/2)."""
    out = _measure_block(mkey, lkey, causal, cross, flow_key, batch, seq, dtype)
    out["quadratic_bytes"] = 0
    if quadratic and seq >= 2:
        # bytes(S) = a S + c S^2: a second run at S1 = S // 2 (not 2S: kinds may cap the length) gives c S^2
        s1 = seq // 2
        half = _measure_block(mkey, lkey, causal, cross, flow_key, batch, s1, dtype)["sharded_bytes"]
        c = (out["sharded_bytes"] - seq / s1 * half) / (seq * seq - seq * s1)
        out["quadratic_bytes"] = int(min(out["sharded_bytes"], max(0.0, c * seq * seq)))
    return out


@lru_cache(maxsize=256)
def _model_level(mkey: str, skey: str, batch: int, seq: int, dtype: str) -> dict[str, int]:
    """Embedding, final norms, head, encoder output and loss bytes, measured on the skeleton."""
    import torch

    from ..analysis import parts

    cfg = {**json.loads(mkey), "stacks": json.loads(skey)}
    dt = _torch_dtype(dtype)
    # a fresh skeleton (not parts' cached one, which the FLOP count uses in float32)
    skel = parts._skeleton.__wrapped__(mkey, skey).to(dt).train()
    d = cfg["hidden_size"]
    excl = _params_and_buffers(skel)

    def measure(fn) -> int:
        rec = _Recorder(excl)
        with rec.hooks():
            fn()
        return rec.total()

    elem = torch.empty((), dtype=dt).element_size()
    # The embedding and the loss are written out instead of run: on meta their kernels import
    # torch._dynamo / torch._refs (1-3 s); tests/test_training_plan.py checks both against real tensors.
    embed = batch * seq * 8 if cfg.get("vocab_size") else batch * seq * cfg["input_dim"] * elem  # indices / Linear input
    pos = skel.pos if skel.pos is not None else next(iter(skel.stacks.values())).pos  # the model's or a stack's
    if getattr(pos, "additive", False) and isinstance(getattr(pos, "weight", None), torch.nn.Parameter):
        embed += seq * 8  # a learned table looks its positions up: the index tensor is saved
    if cfg.get("dropout", 0) > 0:
        embed += batch * seq * d  # the dropout mask, one byte per element
    if cfg.get("type_vocab_size"):
        embed += batch * seq * 8  # token-type ids, looked up like the tokens (BERT)
    n_embed = 2 if cfg["architecture"] == "encoder_decoder" else 1  # source and target
    out = {"embedding_bytes": n_embed * embed}
    for st in skel.stacks.values():  # the norm on each stack's summed embeddings (embed_norm: BERT, BART)
        if st.embed_norm is not None:
            out["embedding_bytes"] += measure(lambda st=st: st.embed_norm(
                torch.empty(batch, seq, d, device="meta", dtype=dt, requires_grad=True)))
    final = 0
    decoding = "decoder" if "decoder" in skel.stacks else "layers"
    for name, st in skel.stacks.items():
        def run(st=st, name=name) -> None:
            h = torch.empty(batch, seq, d, device="meta", dtype=dt, requires_grad=True)
            if st.final_norm is not None:
                h = st.final_norm(h)
            if name == decoding:
                skel._head(h, None)
        final += measure(run)
    out["head_bytes"] = final
    has_cross = any(s.get("cross") for s in cfg["stacks"].values())
    out["encoder_output_bytes"] = batch * seq * d * torch.empty((), dtype=dt).element_size() if has_cross else 0
    out["loss_bytes"] = 0
    if cfg["task"] in ("lm", "mlm", "seq2seq") and cfg.get("vocab_size"):
        v = cfg["vocab_size"]
        # cross-entropy on fp32 logits keeps log_softmax's output, the targets and a 0-dim total weight
        out["loss_bytes"] = batch * seq * v * 4 + batch * seq * 8 + 4
    return out


def as_built(plan: Any, seq_len: int, batch: int = 1, dtype: str = "bf16", *, quadratic: bool = False) -> dict[str, Any]:
    """Measured activation bytes of one forward (module docstring, figure (a)); per executed layer too."""
    from ..analysis import parts

    cfg = parts.config_of(plan)
    mkey = parts.model_key(cfg)
    top = _model_level(mkey, parts.skeleton_stacks(cfg), batch, seq_len, dtype)
    per_layer = []
    for name, sp in plan.stacks.items():
        st = cfg["stacks"][name]
        keys = [parts.layer_key(layer) for layer in st["layers"]]
        flow = dict(st.get("flow") or {})
        flow["per_layer"] = False  # one speed's worth per layer either way
        fkey = json.dumps(flow, sort_keys=True)
        for layer in sp.executed:
            try:
                r = parts.per_layer(layer_saved, parts.layer_model_key(cfg, layer.unique_index), keys[layer.unique_index],
                                    bool(st["causal"]), bool(st.get("cross")), fkey, batch, seq_len, dtype, quadratic)
            except ValueError as exc:  # a kind refuses the shape (e.g. longer than its max_seq_len)
                from ..errors import DesignError

                raise DesignError("seq_len", str(exc).splitlines()[0]) from None
            per_layer.append({"stack": name, "index": layer.index, "attention": layer.attention, "mlp": layer.mlp, **r})
    layers_total = sum(e["bytes"] for e in per_layer)
    outside = top["embedding_bytes"] + top["head_bytes"] + top["encoder_output_bytes"]
    out = {
        "total_bytes": layers_total + outside,
        "layers_bytes": layers_total,
        **top,
        "per_layer": per_layer,
        "batch": batch,
        "seq_len": seq_len,
        "dtype": dtype,
    }
    if quadratic:
        out["by_recompute"] = {m: recompute_total(out, m) for m in RECOMPUTE}
    return out


def layer_bytes(entry: dict[str, int], *, recompute: str = "none", tp: int = 1, sp: bool = False) -> float:
    """Bytes one layer keeps for backward on one tensor-parallel rank (``full``: only its input)."""
    if recompute == "full":
        return entry["input_bytes"] / (tp if sp else 1)
    rep, shard = entry["replicated_bytes"], entry["sharded_bytes"]
    if recompute == "selective":
        shard -= entry["quadratic_bytes"]
    return (rep + shard) / tp if sp else rep + shard / tp


def recompute_total(ab: dict[str, Any], recompute: str) -> int:
    """Whole-model as-built bytes (no parallelism) under a recompute mode."""
    layers = ab["per_layer"]
    kept = sum(layer_bytes(e, recompute=recompute) for e in layers)
    if recompute == "full" and layers:
        kept += max(e["bytes"] for e in layers)  # the layer being recomputed in backward
    return int(kept + ab["embedding_bytes"] + ab["head_bytes"] + ab["encoder_output_bytes"])


# ---------------------------------------------------------------------------
# Korthikanti et al. 2022, table 2 (figure (b))


def korthikanti_layer_bytes(s: int, b: int, h: int, a: int, *, t: int = 1, sp: bool = False,
                            recompute: str = "none") -> float:
    """Activation bytes per transformer layer (arXiv 2205.05198, table 2; module docstring)."""
    sbh = s * b * h
    attn = 5 * a * s / h  # softmax input/output, dropout mask, over the a heads' s x s maps
    if recompute == "full":
        return 2 * sbh
    if recompute == "selective":
        attn = 0.0
    if sp:
        return sbh / t * (34 + attn)
    return sbh * (10 + 24 / t + attn / t)


def korthikanti_total_bytes(s: int, b: int, h: int, a: int, n_layers: int, *, t: int = 1, sp: bool = False,
                            recompute: str = "none", p: int = 1, interleave: int = 1) -> float:
    """First pipeline stage's activation bytes for the layers (section 4.2.3): L layers' worth, interleaving factor."""
    per = korthikanti_layer_bytes(s, b, h, a, t=t, sp=sp, recompute=recompute)
    factor = 1 + (p - 1) / (p * interleave) if interleave > 1 else 1.0
    return per * n_layers * factor


def korthikanti_for_design(plan: Any, seq_len: int, batch: int, *, t: int = 1, sp: bool = False,
                           recompute: str = "none") -> dict[str, Any]:
    """Table 2 for this design's width and heads (the paper's GPT block: MHA, 4h GELU MLP, 2-byte activations)."""
    d = plan.design
    per = korthikanti_layer_bytes(seq_len, batch, d.hidden_size, d.n_heads, t=t, sp=sp, recompute=recompute)
    n = len(plan.layers)
    return {"per_layer_bytes": per, "layers_bytes": per * n, "n_layers": n,
            "note": "Korthikanti et al. 2022 (arXiv 2205.05198) table 2: a GPT layer of this width and head count, "
                    "16-bit activations; it does not see GQA, gated MLPs, MoE or non-softmax mixers"}
