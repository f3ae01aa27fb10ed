"""Design -> plain model config -> ``nn.Module``.

``model_config`` turns a design (or its resolved plan) into the JSON-serialisable
dict that :class:`backend.nn.model.Transformer` takes (format in that module's
docstring); the standalone export writes the same dict, so both rebuild the
same model. ``build_model`` imports the modules of the kinds a config uses and
constructs the model, on the meta device without allocating or initialising.
"""
from __future__ import annotations

import copy
from typing import Any, Union

import torch

from .plan import Plan, resolve_plan
from .registry import CROSS, POSITIONAL, REGISTRIES
from .spec import Design

Source = Union[Design, Plan, dict, str]

_MODEL_KEYS = (
    "name", "architecture", "task", "vocab_size", "input_dim", "output_dim", "hidden_size", "n_heads",
    "activation", "max_seq_len", "positional", "rope_theta", "rope_scaling", "norm", "norm_placement", "norm_eps", "bias",
    "qkv_bias", "tie_embeddings", "final_norm", "dropout", "init_std", "gradient_checkpointing",
)


# encoder models (BERT / RoBERTa / BART / ModernBERT; issue 12): design fields copied as they are
ENCODER_KEYS = ("embed_norm", "type_vocab_size", "position_offset", "head_transform", "head_bias", "first_attn_norm")


def is_model_config(obj: Any) -> bool:
    """True for a model config dict (as opposed to a design dict)."""
    return isinstance(obj, dict) and "stacks" in obj and "hidden_size" in obj


def model_config(source: Source) -> dict[str, Any]:
    """The plain config dict of ``source`` (a Design, Plan, design dict, file or preset name)."""
    plan = source if isinstance(source, Plan) else resolve_plan(source)
    d = plan.design
    cfg: dict[str, Any] = {k: getattr(d, k) for k in _MODEL_KEYS}
    cfg["tie_embeddings"] = d.tied  # resolved (null = automatic in the design)
    cfg["rope_scaling"] = None if d.rope_scaling is None else d.rope_scaling.model_dump(mode="json")  # YaRN
    cfg["n_kv_heads"] = d.kv_heads
    cfg["head_dim"] = d.attn_head_dim
    cfg["ffn_hidden"] = d.ffn_hidden
    # encoder-decoder models (T5, BART; issue 12): the positional kind's params with defaults filled in
    cfg["positional_params"] = POSITIONAL[d.positional].resolve_params(d.positional_params, ["positional_params"])
    cfg["positional_per_stack"] = d.positional_per_stack
    cfg["head_rescale"] = d.head_rescale
    cfg["parallel_residual"], cfg["embed_scale"] = d.parallel_residual, d.embed_scale  # issue 12 decoders
    cfg["parallel_shared_norm"], cfg["norm_bias"] = d.parallel_shared_norm, d.norm_bias
    cfg["logit_softcap"] = d.logit_softcap
    # encoder models (BERT / RoBERTa / BART; issue 12)
    for key in ENCODER_KEYS:
        cfg[key] = getattr(d, key)
    stacks: dict[str, Any] = {}
    for name, sp in plan.stacks.items():
        layers = []
        for layer in sp.unique:
            conf = {cat: {**copy.deepcopy(layer.config.get(cat, {})), "kind": getattr(layer, cat)}
                    for cat in ("attention", "mlp", "norm")}
            if layer.cross:
                conf["cross"] = {**copy.deepcopy(layer.config.get("cross", {})), "kind": "cross"}
            layers.append({"attention": layer.attention, "mlp": layer.mlp, "norm": layer.norm, "config": conf})
        stacks[name] = {
            "causal": sp.causal,
            "cross": any(layer.cross for layer in sp.unique),
            "layers": layers,
            "order": [layer.unique_index for layer in sp.executed],
            "flow": d.stacks()[name].flow.model_dump(mode="json"),
        }
    cfg["stacks"] = stacks
    return cfg


def kinds_used(cfg: dict[str, Any]) -> set[tuple[str, str]]:
    """(category, kind) pairs a config needs registered."""
    used = {("positional", cfg["positional"]), ("norm", cfg["norm"])}
    for st in cfg["stacks"].values():
        if st.get("cross"):
            used.add(("cross", "cross"))
        for layer in st["layers"]:
            for cat in ("attention", "mlp", "norm"):
                used.add((cat, layer[cat]))
            mlp = REGISTRIES["mlp"].get(layer["mlp"])
            if mlp is not None:  # kinds this MLP builds inside (a MoE's experts)
                used.update(("mlp", sub) for sub in mlp.sub_kinds(layer.get("config", {}).get("mlp", {})))
    return used


def import_kinds(cfg: dict[str, Any]) -> None:
    """Import the module of every kind ``cfg`` uses, so ``backend.nn.common.REGISTRY`` has them."""
    import backend.nn.model  # noqa: F401  (the assembly itself)

    for cat, name in sorted(kinds_used(cfg)):
        info = CROSS if cat == "cross" else REGISTRIES[cat][name]
        info.load()


def build_model(source: Source, *, device: Union[str, torch.device] = "cpu", dtype: torch.dtype = torch.float32,
                init: bool = True):
    """A :class:`~backend.nn.model.Transformer` for a design, plan or model config.

    ``device="meta"`` allocates nothing and runs no initialisation (for
    parameter / FLOP / memory analysis of any size). Otherwise ``init=True``
    applies the model's ``init_weights()`` scheme.
    """
    cfg = source if is_model_config(source) else model_config(source)
    import_kinds(cfg)
    from .nn.model import Transformer

    device = torch.device(device)
    with torch.device(device):
        model = Transformer(cfg)
    if device.type != "meta" and init:
        model.init_weights()
    if dtype != torch.float32:
        model = model.to(dtype)
    return model
