"""Hugging Face ``config.json`` -> design (``python -m backend import-hf``), and weight-name maps.

Torch-free. One module per model family (``backend/hf/<family>.py``) declares
the model types it reads in :data:`FAMILIES`; this module dispatches on the
config's ``model_type`` and applies the rules every importer shares:

* every key of the config is either *mapped* onto the design, *known to change
  nothing* about the function the model computes (token ids, dropout, init
  ranges, cache flags, labels: ``common.INERT``), or an error naming the key
  and its value. A key the importer does not know is an error too, so a new
  upstream feature never yields a silently different model;
* a few features that change outputs but no count (e.g. the tanh GELU
  approximation) are *approximations*: the family returns them as notes; they
  are accepted by default, listed in the design's description and on the
  CLI's stderr, and errors with ``exact=True``;
* kinds are picked by their registry *roles* (``backend/kinds``), never by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..errors import DesignError
from . import (decoders, deepseek, encdec, encoders, gpt_oss, gptj_bloom, jamba, llama, mamba2, modernbert, nemotron_h,
               qwen3_next, qwen_moe)
from .common import bad


@dataclass(frozen=True)
class Family:
    """The importer of some model types: config -> (design dict, notes); HF state dict -> ours."""

    model_types: tuple[str, ...]
    import_config: Callable[[dict[str, Any]], tuple[dict[str, Any], list[str]]]
    map_weights: Optional[Callable[[str, dict[str, Any]], dict[str, Any]]] = None
    weight_types: tuple[str, ...] = ()  # the model types map_weights handles (default: all of model_types)
    takes_config: bool = False  # map_weights(model_type, state, config): layouts the shapes do not determine


FAMILIES: list[Family] = [
    Family(llama.MODEL_TYPES, llama.import_config, llama.map_weights, llama.WEIGHT_TYPES),
    Family(qwen_moe.MODEL_TYPES, qwen_moe.import_config, qwen_moe.map_weights),
    Family(gpt_oss.MODEL_TYPES, gpt_oss.import_config, gpt_oss.map_weights),
    Family(deepseek.MODEL_TYPES, deepseek.import_config, deepseek.map_weights),
    Family(encdec.MODEL_TYPES, encdec.import_config, encdec.map_weights, encdec.WEIGHT_TYPES),
    Family(qwen3_next.MODEL_TYPES, qwen3_next.import_config, qwen3_next.map_weights),
    Family(decoders.MODEL_TYPES, decoders.import_config, decoders.map_weights, takes_config=True),  # olmo2, gpt_neox, gemma, phi3, gemma3
    Family(mamba2.MODEL_TYPES, mamba2.import_config, mamba2.map_weights),
    Family(nemotron_h.MODEL_TYPES, nemotron_h.import_config, nemotron_h.map_weights),
    Family(jamba.MODEL_TYPES, jamba.import_config, jamba.map_weights),
    Family(encoders.MODEL_TYPES, encoders.import_config, encoders.map_weights),  # bert, roberta (issue 12)
    Family(modernbert.MODEL_TYPES, modernbert.import_config, modernbert.map_weights),  # modernbert (issue 12)
    Family(gptj_bloom.MODEL_TYPES, gptj_bloom.import_config, gptj_bloom.map_weights, takes_config=True),  # gptj, bloom
]


def _by_type() -> dict[str, Family]:
    return {mt: fam for fam in FAMILIES for mt in fam.model_types}


SUPPORTED = tuple(sorted(_by_type()))


def import_hf_notes(config: dict[str, Any], *, exact: bool = False) -> tuple[dict[str, Any], list[str]]:
    """(design dict, approximations) for a Hugging Face config; DesignError on anything else."""
    if not isinstance(config, dict):
        raise DesignError("<config>", f"must be a mapping (a config.json), got {type(config).__name__}")
    mt = config.get("model_type")
    family = _by_type().get(mt) if isinstance(mt, str) else None
    if family is None:
        raise bad("model_type", mt, f"is not supported by import-hf (supported: {', '.join(SUPPORTED)})")
    design, notes = family.import_config(config)
    if notes:
        if exact:
            raise DesignError("model_type", f"{mt!r} needs approximations (exact import refused): {'; '.join(notes)}")
        design["description"] = f"Imported from a Hugging Face {mt} config. Not modelled: {'; '.join(notes)}."
    else:
        design["description"] = f"Imported from a Hugging Face {mt} config (exact)."
    return design, notes


def import_hf(config: dict[str, Any], *, exact: bool = False) -> dict[str, Any]:
    """A design dict (load it with ``backend.spec.load_design``) for a Hugging Face config dict."""
    return import_hf_notes(config, exact=exact)[0]


def is_hf_config(data: Any) -> bool:
    """A Hugging Face config is recognised by its ``model_type`` key (designs have none)."""
    return isinstance(data, dict) and "model_type" in data


def map_state_dict(model_type: str, hf_state: dict[str, Any], config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Our state dict (names and layouts of ``backend.nn.model.Transformer``) from a Hugging Face one.

    Works on any tensor type with ``.t()``, ``.chunk()`` and ``.reshape()`` (torch, no import here).
    Every input name must map (an unknown name is a DesignError), so nothing is silently dropped.
    ``config``: the config.json dict, for layouts whose shapes do not say the head count (gpt_neox).
    """
    weights = {mt: fam for fam in FAMILIES if fam.map_weights for mt in (fam.weight_types or fam.model_types)}
    if model_type not in weights:
        raise bad("model_type", model_type, f"has no weight map (supported: {', '.join(sorted(weights))})")
    if weights[model_type].takes_config:
        return weights[model_type].map_weights(model_type, hf_state, config)  # type: ignore[misc,call-arg]
    return weights[model_type].map_weights(model_type, hf_state)  # type: ignore[misc]
