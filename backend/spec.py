"""The design: DESIGN.md section 3 as frozen, validated, serialisable data.

Load with :func:`load_design` (YAML via ``safe_load``, JSON, a dict, or a path);
every failure is a :class:`~backend.errors.DesignError` naming the field path
and the bad value. Types are strict (``"512"``, ``12.0`` or ``true`` for an
integer and ``"yes"`` for a boolean are errors, not silently coerced; an integer
is accepted for a float), nan/inf are rejected, and YAML reads ``1e-5`` as a
float as YAML 1.2 does. No torch is imported here, so a bad file is rejected in
milliseconds. The layer plan (``backend.plan``) is the only consumer of the
stack fields; everything downstream reads the plan.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .document import MAX_FILE_BYTES, MAX_NODES, parse_document, read_document  # noqa: F401 (re-exported)
from .errors import DesignError, format_path, short_repr
from .hf import import_hf, is_hf_config
from .presets import find_preset, list_presets
from .kinds.base import KindError
from .registry import ACTIVATIONS, ATTENTION, MLP, NORM, POSITIONAL, kind, role

# Sane upper bounds: an absurd value is a clear error, never a hang or OOM.
MAX_LAYERS = 1024  # unique layer definitions per stack
MAX_EXECUTED = 4096  # executed depth per stack after repetition
MAX_WIDTH = 65536
MAX_HEADS = 1024
MAX_VOCAB = 4_194_304
MAX_SEQ = 1_048_576
MAX_FACTOR = 1024

TOKEN_TASKS = ("lm", "mlm", "seq2seq")  # tasks whose head predicts tokens
Architecture = Literal["encoder", "decoder", "encoder_decoder"]
Task = Literal["lm", "mlm", "regression", "sequence", "classification", "cluster_centers", "cluster_assignments", "seq2seq"]


class _Frozen(BaseModel):
    # strict: a quoted number or `yes` is a wrong type, not silently coerced;
    # allow_inf_nan=False: nan/inf are rejected with the field named.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True, allow_inf_nan=False)


ParamsBlock = dict[str, Any]


class LayerParams(_Frozen):
    """Per-kind parameter overrides, checked against the registry by the plan."""

    attention: ParamsBlock = Field(default_factory=dict, description="params of the attention kind")
    mlp: ParamsBlock = Field(default_factory=dict, description="params of the MLP kind")
    norm: ParamsBlock = Field(default_factory=dict, description="params of the norm kind")
    cross: ParamsBlock = Field(default_factory=dict, description="params of the cross-attention (enc-dec decoder)")


class When(_Frozen):
    """Rule condition over 0-based unique-layer indices; all given keys must hold."""

    every: Optional[int] = Field(None, ge=1, le=MAX_LAYERS, description="match i >= offset and (i - offset) % every == 0")
    offset: int = Field(0, ge=0, le=MAX_LAYERS, description="start index for `every`")
    position: Optional[Literal["first", "last", "middle"]] = Field(None, description="0, n-1 or n//2")
    # strict=False on the pair only, so a YAML/JSON list is accepted for the tuple
    # (its items stay strict).
    range: Optional[tuple[int, int]] = Field(None, strict=False, description="[a, b): a <= i < b")
    fraction: Optional[tuple[float, float]] = Field(None, strict=False, description="[a, b): a <= i/n < b (b = 1.0 includes the last layer)")
    layer_idx: Optional[list[int]] = Field(None, max_length=MAX_LAYERS, description="explicit indices")

    @model_validator(mode="after")
    def _check(self) -> "When":
        if self.range is not None and not (0 <= self.range[0] < self.range[1]):
            raise _err(["range"], f"must be [a, b] with 0 <= a < b, got {list(self.range)}")
        if self.fraction is not None:
            a, b = self.fraction
            if not (0.0 <= a < b <= 1.0):
                raise _err(["fraction"], f"must be [a, b] with 0 <= a < b <= 1, got {list(self.fraction)}")
        if self.layer_idx is not None and any(i < 0 for i in self.layer_idx):
            raise _err(["layer_idx"], f"indices must be >= 0, got {self.layer_idx}")
        # offset 0 is the default and is written out by to_dict(), so only a
        # non-zero offset without `every` is an error (round trips must load).
        if self.offset != 0 and self.every is None:
            raise _err(["offset"], "only applies together with `every`")
        return self


class Rule(_Frozen):
    when: When = Field(default_factory=When, description="condition; empty = every layer")
    attention: Optional[str] = None
    mlp: Optional[str] = None
    norm: Optional[str] = None
    params: LayerParams = Field(default_factory=LayerParams)


class LayerEntry(_Frozen):
    """One unique layer in an `explicit` list (missing fields take the stack defaults)."""

    attention: Optional[str] = None
    mlp: Optional[str] = None
    norm: Optional[str] = None
    params: LayerParams = Field(default_factory=LayerParams)


class PatternRef(_Frozen):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Repeat(_Frozen):
    """Weight sharing: n_layers unique definitions executed several times."""

    mode: Literal["none", "cycle", "layerwise", "grouped"] = "none"
    factor: int = Field(1, ge=1, le=MAX_FACTOR, description="cycle/layerwise: executions of each unique layer")
    groups: Optional[list[int]] = Field(None, max_length=MAX_LAYERS, description="grouped: consecutive unique-layer group sizes (sum = n_layers)")
    group_factors: Optional[list[int]] = Field(None, max_length=MAX_LAYERS, description="grouped: repetitions of each group")

    @model_validator(mode="after")
    def _check(self) -> "Repeat":
        if self.mode == "grouped":
            if not self.groups:
                raise _err(["groups"], "grouped repetition needs a non-empty list of group sizes")
            if self.group_factors is None or len(self.group_factors) != len(self.groups):
                raise _err(["group_factors"], f"needs one factor per group ({len(self.groups)}), got {self.group_factors}")
            for i, g in enumerate(self.groups):
                if not isinstance(g, int) or g < 1:
                    raise _err(["groups", i], f"must be >= 1, got {g}")
            for i, f in enumerate(self.group_factors):
                if not isinstance(f, int) or not (1 <= f <= MAX_FACTOR):
                    raise _err(["group_factors", i], f"must be in [1, {MAX_FACTOR}], got {f}")
        else:
            if self.groups is not None or self.group_factors is not None:
                raise _err(["groups"], f"only applies with mode 'grouped', got mode {self.mode!r}")
            if self.mode == "none" and self.factor != 1:
                raise _err(["factor"], f"mode 'none' needs factor 1, got {self.factor}")
        return self


class Flow(_Frozen):
    """Flow-speed residual scaling: x = x + s * f(norm(x))."""

    mode: Literal["none", "constant", "learned", "predicted"] = "none"
    per_layer: bool = Field(False, description="one speed per executed layer instead of one global")
    value: float = Field(1.0, ge=-100.0, le=100.0, description="constant speed, or the initial value when learned")
    hidden: int = Field(32, ge=1, le=4096, description="hidden width of the predictor MLP (predicted mode)")

    @model_validator(mode="after")
    def _check(self) -> "Flow":
        if not math.isfinite(self.value):
            raise _err(["value"], f"must be finite, got {self.value}")
        return self


class RopeScaling(_Frozen):
    """YaRN rotary scaling (Peng et al. 2023, arXiv 2309.00071), as gpt-oss uses it (backend/nn/common.py)."""

    type: Literal["yarn"] = "yarn"
    factor: float = Field(..., gt=0, le=1e4, description="context extension factor s")
    original_max_position_embeddings: int = Field(..., ge=1, le=MAX_SEQ, description="pre-training context L")
    beta_fast: float = Field(32.0, gt=0, le=1e4, description="rotations above which a dimension is extrapolated")
    beta_slow: float = Field(1.0, gt=0, le=1e4, description="rotations below which a dimension is interpolated")
    truncate: bool = Field(True, description="round the correction range to whole dimensions")
    attention_factor: Optional[float] = Field(None, gt=0, le=100, description="cos/sin scale (null = 0.1 ln s + 1)")


class Stack(_Frozen):
    """A stack of layers (the `layers`, `encoder` or `decoder` block)."""

    n_layers: int = Field(ge=1, le=MAX_LAYERS, description="unique layer definitions (executed depth follows `repeat`)")
    attention: str = Field(role("attention", "default"), description="default attention kind of every layer")
    mlp: str = Field(role("mlp", "default"), description="default MLP kind of every layer")
    norm: Optional[str] = Field(None, description="default norm kind (null = the model's `norm`)")
    params: LayerParams = Field(default_factory=LayerParams, description="default params of every layer")
    pattern: Optional[Union[str, PatternRef]] = None
    string: Optional[str] = Field(None, max_length=20000)
    hybrid_override_pattern: Optional[str] = Field(
        None, max_length=MAX_LAYERS,
        description="Megatron-LM layer pattern, one character per layer: M Mamba-2, * attention, - MLP, E MoE")
    rules: list[Rule] = Field(default_factory=list, max_length=1000)
    explicit: Optional[list[LayerEntry]] = Field(None, max_length=MAX_LAYERS)
    repeat: Repeat = Field(default_factory=Repeat)
    flow: Flow = Field(default_factory=Flow)

    @model_validator(mode="after")
    def _check(self) -> "Stack":
        kind("attention", self.attention, ["attention"])
        kind("mlp", self.mlp, ["mlp"])
        if self.norm is not None:
            kind("norm", self.norm, ["norm"])
        given = [k for k in ("pattern", "string", "explicit", "hybrid_override_pattern") if getattr(self, k) is not None]
        if len(given) > 1:
            raise _err([given[1]], f"is mutually exclusive with `{given[0]}`; use one of pattern, string, explicit, "
                                   "hybrid_override_pattern")
        if self.explicit is not None and len(self.explicit) != self.n_layers:
            raise _err(["explicit"], f"has {len(self.explicit)} entries but n_layers is {self.n_layers}")
        if self.repeat.mode == "grouped" and sum(self.repeat.groups or []) != self.n_layers:
            raise _err(["repeat", "groups"], f"sizes sum to {sum(self.repeat.groups or [])} but n_layers is {self.n_layers}")
        if self.executed_depth > MAX_EXECUTED:
            raise _err(["repeat"], f"executed depth {self.executed_depth} exceeds the limit {MAX_EXECUTED}")
        return self

    @property
    def executed_depth(self) -> int:
        r = self.repeat
        if r.mode == "grouped":
            return sum(g * f for g, f in zip(r.groups or [], r.group_factors or []))
        return self.n_layers * (r.factor if r.mode in ("cycle", "layerwise") else 1)


class Design(_Frozen):
    """A whole model design (DESIGN.md section 3). Unknown keys are errors."""

    name: str = Field("untitled", min_length=1, max_length=200)
    description: str = Field("", max_length=20000)
    architecture: Architecture = "decoder"
    task: Task = "lm"
    vocab_size: Optional[int] = Field(32000, ge=2, le=MAX_VOCAB, description="token inputs; null with input_dim for features")
    input_dim: Optional[int] = Field(None, ge=1, le=MAX_WIDTH, description="continuous inputs of this width")
    output_dim: Optional[int] = Field(None, ge=1, le=MAX_VOCAB, description="regression/classification/sequence outputs; clusters for cluster tasks")
    hidden_size: int = Field(512, ge=1, le=MAX_WIDTH)
    n_heads: int = Field(8, ge=1, le=MAX_HEADS)
    n_kv_heads: Optional[int] = Field(None, ge=1, le=MAX_HEADS, description="null = n_heads (MHA); 1 = MQA; else GQA")
    head_dim: Optional[int] = Field(None, ge=1, le=4096, description="null = hidden_size // n_heads")
    mlp_hidden: Optional[int] = Field(None, ge=1, le=1 << 20, description="explicit FFN width")
    expansion_ratio: float = Field(4.0, gt=0, le=64)
    activation: str = Field(ACTIVATIONS[0], json_schema_extra={"enum": list(ACTIVATIONS)},
                            description="activation of the dense `mlp` kind (and MoE experts of that kind)")
    max_seq_len: int = Field(2048, ge=1, le=MAX_SEQ)
    positional: str = Field(role("positional", "default"), json_schema_extra={"enum": list(POSITIONAL)},
                            description="positional scheme (a positional kind of the registry)")
    rope_theta: float = Field(10000.0, gt=0, le=1e9)
    # YaRN rotary scaling (gpt-oss): reaches build.model_config, nn/model.CONFIG_KEYS and LayerContext
    rope_scaling: Optional[RopeScaling] = Field(None, description="YaRN scaling of the rotary frequencies (null = plain)")
    norm: str = Field(role("norm", "default"), json_schema_extra={"enum": list(NORM)}, description="norm kind of every layer")
    norm_placement: Literal["pre", "post", "pre_post", "post_sublayer"] = Field(
        "pre", description="pre: x + f(norm(x)); post: norm(x + f(x)); pre_post: x + norm(f(norm(x))); "
        "post_sublayer: x + norm(f(x)) (OLMo 2)")
    norm_eps: float = Field(1e-5, gt=0, lt=1)
    bias: bool = False
    qkv_bias: bool = False
    tie_embeddings: Optional[bool] = Field(None, description="share the input embedding with the output head; "
                                           "null = automatic (tied for token-predicting tasks with a vocabulary)")
    final_norm: bool = True
    dropout: float = Field(0.0, ge=0, lt=1)
    init_std: float = Field(0.02, gt=0, le=10, description="std of the normal weight init (output projections scaled by 1/sqrt(2*depth))")
    gradient_checkpointing: bool = False
    # ---- encoder-decoder models (T5, BART; issue 12) ----
    positional_params: dict[str, Any] = Field(default_factory=dict, description="params of the positional kind "
                                              "(e.g. the relative bias's num_buckets and max_distance)")
    positional_per_stack: bool = Field(False, description="one positional module per stack: the encoder and the "
                                       "decoder get their own table (BART's learned positions, T5's relative bias)")
    head_rescale: bool = Field(False, description="multiply the last hidden state by hidden_size**-0.5 before the "
                               "token head (T5 with a tied head, Raffel et al. 2020)")
    # ---- end encoder-decoder block ----
    # ---- decoder building blocks (OLMo 2, GPT-NeoX, Gemma; issue 12) ----
    parallel_residual: bool = Field(False, description="attention and MLP both read the block input: "
                                    "x + attn(norm1(x)) + mlp(norm2(x)) (GPT-J, GPT-NeoX / Pythia)")
    embed_scale: bool = Field(False, description="multiply the token embeddings by sqrt(hidden_size) (Gemma)")
    parallel_shared_norm: bool = Field(False, description="with parallel_residual: one norm feeds both branches, "
                                       "x + attn(norm(x)) + mlp(norm(x)) (GPT-J, Falcon-7B)")
    norm_bias: Optional[bool] = Field(None, description="shift of the norms: null = as `bias`; true / false for the "
                                      "norms alone (Falcon: LayerNorm biases, linear layers without)")
    logit_softcap: float = Field(0.0, ge=0.0, le=1e4, description="final-logit soft-cap of the token head: "
                                 "cap * tanh(logits / cap), 0 = off (Gemma 2, Gemma Team 2024, arXiv 2408.00118)")
    # ---- end decoder building blocks ----
    # ---- encoder models: BERT / RoBERTa / BART / ModernBERT embeddings and MLM head (issue 12) ----
    embed_norm: bool = Field(False, description="a norm (the model's `norm` kind) on the summed input embeddings, "
                             "one per stack (BERT, Devlin et al. 2019, arXiv 1810.04805; BART's layernorm_embedding)")
    type_vocab_size: int = Field(0, ge=0, le=MAX_VOCAB, description="token-type (segment) embeddings added to the "
                                 "input, 0 = none (BERT: 2, RoBERTa: 1)")
    position_offset: int = Field(0, ge=0, le=MAX_SEQ, description="learned positions: position p reads row p + offset "
                                 "of a (max_seq_len + offset)-row table (RoBERTa / BART: 2, after padding_idx 1)")
    head_transform: bool = Field(False, description="token head: dense D->D (+bias with `bias`), `activation`, then the "
                                 "model's norm before the vocabulary projection (BERT's MLM head transform)")
    head_bias: bool = Field(False, description="a bias on the token head's vocabulary logits (BERT / RoBERTa MLM)")
    first_attn_norm: bool = Field(True, description="false: the first layer of each stack has no norm before its "
                                  "attention (the embedding norm serves; ModernBERT, Warner et al. 2024, arXiv 2412.13663)")
    # ---- end encoder-model block ----
    layers: Optional[Stack] = None
    encoder: Optional[Stack] = None
    decoder: Optional[Stack] = None

    @model_validator(mode="after")
    def _check(self) -> "Design":
        kind("norm", self.norm, ["norm"])
        kind("positional", self.positional, ["positional"])
        if self.activation not in ACTIVATIONS:
            raise _err(["activation"], f"must be one of {', '.join(ACTIVATIONS)}; got {short_repr(self.activation)}")
        arch = self.architecture
        if arch == "encoder_decoder":
            if self.encoder is None or self.decoder is None:
                missing = "encoder" if self.encoder is None else "decoder"
                raise _err([missing], "is required for architecture 'encoder_decoder'")
            if self.layers is not None:
                raise _err(["layers"], "is not used by 'encoder_decoder'; put the stacks under `encoder` and `decoder`")
        else:
            if self.layers is None:
                raise _err(["layers"], f"is required for architecture {arch!r}")
            for k in ("encoder", "decoder"):
                if getattr(self, k) is not None:
                    raise _err([k], f"only applies to 'encoder_decoder'; got architecture {arch!r} (use `layers`)")
        allowed = {
            "decoder": {"lm", "regression", "sequence", "classification", "cluster_centers", "cluster_assignments"},
            "encoder": {"mlm", "regression", "sequence", "classification", "cluster_centers", "cluster_assignments"},
            "encoder_decoder": {"seq2seq", "regression", "sequence", "classification"},
        }[arch]
        if self.task not in allowed:
            raise _err(["task"], f"{self.task!r} does not fit architecture {arch!r} (allowed: {', '.join(sorted(allowed))})")
        if (self.vocab_size is None) == (self.input_dim is None):
            raise _err(["vocab_size"], f"set exactly one of vocab_size (tokens) or input_dim (features); got vocab_size={self.vocab_size}, input_dim={self.input_dim}")
        if self.task in ("lm", "mlm", "seq2seq") and self.vocab_size is None:
            raise _err(["vocab_size"], f"task {self.task!r} predicts tokens and needs vocab_size, got null")
        if self.task in ("regression", "sequence", "classification", "cluster_centers", "cluster_assignments") and self.output_dim is None:
            raise _err(["output_dim"], f"task {self.task!r} needs output_dim, got null")
        if self.task == "cluster_centers" and self.input_dim is None:
            raise _err(["input_dim"], "task 'cluster_centers' predicts centers in input space and needs input_dim, got null")
        if self.tie_embeddings and self.task not in TOKEN_TASKS:
            raise _err(["tie_embeddings"], f"only applies to token-predicting tasks (lm, mlm, seq2seq); got task {self.task!r} (set it to false)")
        if self.head_dim is None and self.hidden_size % self.n_heads != 0:
            raise _err(["n_heads"], f"must divide hidden_size {self.hidden_size} (or set head_dim), got {self.n_heads}")
        if self.n_heads % self.kv_heads != 0:
            raise _err(["n_kv_heads"], f"must divide n_heads {self.n_heads}, got {self.n_kv_heads}")
        if self.kv_heads > self.n_heads:
            raise _err(["n_kv_heads"], f"must be <= n_heads {self.n_heads}, got {self.n_kv_heads}")
        if self.rope_scaling is not None and not POSITIONAL[self.positional].rotary:
            raise _err(["rope_scaling"], f"scales rotary frequencies and needs a rotary positional, got {self.positional!r}")
        if POSITIONAL[self.positional].rotary and self.attn_head_dim % 2:
            raise _err(["head_dim"], f"{self.positional} rotates channel pairs and needs an even head_dim, got {self.attn_head_dim}")
        if self.n_heads * self.attn_head_dim > 4 * MAX_WIDTH:
            raise _err(["head_dim"], f"n_heads * head_dim = {self.n_heads * self.attn_head_dim} exceeds {4 * MAX_WIDTH}")
        if self.ffn_hidden > 1 << 20:
            raise _err(["expansion_ratio"], f"FFN width {self.ffn_hidden} exceeds {1 << 20}")
        self._check_encdec_fields()
        self._check_decoder_blocks()
        self._check_encoder_fields()
        return self

    def _check_decoder_blocks(self) -> None:
        """parallel_residual needs additive residuals and no cross-attention; embed_scale needs token inputs."""
        if self.parallel_residual and self.norm_placement == "post":
            raise _err(["parallel_residual"], "needs an additive residual (norm_placement pre, pre_post or "
                                              "post_sublayer), got norm_placement 'post'")
        if self.parallel_residual and self.architecture == "encoder_decoder":
            raise _err(["parallel_residual"], "is for encoder or decoder stacks (no cross-attention sublayer), "
                                              "got architecture 'encoder_decoder'")
        if self.parallel_shared_norm and not self.parallel_residual:
            raise _err(["parallel_shared_norm"], "shares the norm of parallel branches and needs parallel_residual: true")
        if self.parallel_shared_norm and self.norm_placement != "pre":
            raise _err(["parallel_shared_norm"], f"needs norm_placement 'pre' (one norm before both branches), "
                                                 f"got {self.norm_placement!r}")
        if self.embed_scale and self.vocab_size is None:
            raise _err(["embed_scale"], "scales token embeddings and needs vocab_size, got feature inputs (input_dim)")
        if self.logit_softcap and self.task not in TOKEN_TASKS:
            raise _err(["logit_softcap"], f"caps token logits and needs a token task (lm, mlm, seq2seq); "
                                          f"got {self.logit_softcap} with task {self.task!r}")


    def _check_encoder_fields(self) -> None:
        """Encoder-model options (BERT / RoBERTa / BART): each needs what it applies to."""
        if self.position_offset and not POSITIONAL[self.positional].table:
            raise _err(["position_offset"], f"shifts a learned position table and needs positional 'learned', "
                                            f"got {self.position_offset} with positional {self.positional!r}")
        if self.type_vocab_size and self.vocab_size is None:
            raise _err(["type_vocab_size"], f"adds token-type embeddings to token inputs and needs vocab_size, got {self.type_vocab_size}")
        for key in ("head_transform", "head_bias"):
            if getattr(self, key) and self.task not in TOKEN_TASKS:
                raise _err([key], f"only applies to token-predicting tasks (lm, mlm, seq2seq); got task {self.task!r}")
        for key in ("embed_norm", "head_transform"):  # each applies the model's norm kind to a tensor on its own
            if getattr(self, key) and not NORM[self.norm].normalizes:
                raise _err([key], f"applies the model's norm to a tensor on its own, and norm {self.norm!r} normalises "
                                  f"nothing (it only scales residual branches); pick another norm")
        if not self.first_attn_norm and (self.norm_placement != "pre" or self.parallel_residual):
            why = "parallel_residual" if self.parallel_residual else f"norm_placement {self.norm_placement!r}"
            raise _err(["first_attn_norm"], f"false drops the pre-norm of the first attention and needs norm_placement "
                                            f"'pre' without parallel_residual, got {why}")

    def _check_encdec_fields(self) -> None:
        """positional_params against the positional kind's schema and check; head_rescale needs a token head."""
        info = POSITIONAL[self.positional]
        cfg = info.resolve_params(self.positional_params, ["positional_params"])
        try:
            info.check(self, cfg, causal=self.architecture == "decoder")
        except KindError as exc:
            raise _err(["positional_params"] + ([exc.param] if exc.param else []), exc.message) from None
        if self.head_rescale and self.task not in TOKEN_TASKS:
            raise _err(["head_rescale"], f"only applies to token-predicting tasks (lm, mlm, seq2seq); got task {self.task!r}")

    # ---- derived values (properties, so nothing is lost when written out) ----
    @property
    def tied(self) -> bool:
        """Whether the head shares the embedding (``tie_embeddings``, or automatic when null)."""
        if self.tie_embeddings is not None:
            return self.tie_embeddings
        return self.task in TOKEN_TASKS and self.vocab_size is not None

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        return self.mlp_hidden or max(1, int(round(self.expansion_ratio * self.hidden_size)))

    def stacks(self) -> dict[str, Stack]:
        """Stacks in execution order, keyed by their field name."""
        if self.architecture == "encoder_decoder":
            return {"encoder": self.encoder, "decoder": self.decoder}  # type: ignore[dict-item]
        return {"layers": self.layers}  # type: ignore[dict-item]

    def is_causal(self, stack: str) -> bool:
        return stack == "decoder" or (stack == "layers" and self.architecture == "decoder")

    def to_dict(self, *, exclude_defaults: bool = False) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=exclude_defaults)

    def to_json(self, *, exclude_defaults: bool = False) -> str:
        return json.dumps(self.to_dict(exclude_defaults=exclude_defaults), indent=2, sort_keys=False, ensure_ascii=False) + "\n"

    def to_yaml(self, *, exclude_defaults: bool = False) -> str:
        data = self.to_dict(exclude_defaults=exclude_defaults)
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
        if any(c in text for c in "\x85\u2028\u2029\ufeff"):
            # PyYAML writes these raw with allow_unicode, and reads them back as line
            # breaks / a BOM; escaping keeps the round trip exact.
            text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=False, width=100)
        return text


# ---------------------------------------------------------------------------
# Errors: pydantic's messages rewritten into "path: what is wrong, got value".


class _Located(ValueError):
    """Raised inside validators: a path relative to the model being validated."""

    def __init__(self, parts: list[Any], message: str):
        self.parts = parts
        self.message = message
        super().__init__(message)


def _err(parts: list[Any], message: str) -> _Located:
    return _Located(parts, message)


_MESSAGES = {
    "greater_than_equal": lambda c, v: f"must be >= {c.get('ge')}, got {short_repr(v)}",
    "greater_than": lambda c, v: f"must be > {c.get('gt')}, got {short_repr(v)}",
    "less_than_equal": lambda c, v: f"must be <= {c.get('le')}, got {short_repr(v)}",
    "less_than": lambda c, v: f"must be < {c.get('lt')}, got {short_repr(v)}",
    "extra_forbidden": lambda c, v: "unknown key (check the spelling; see `python -m backend schema`)",
    "missing": lambda c, v: "is required",
    "literal_error": lambda c, v: f"must be one of {c.get('expected')}; got {short_repr(v)}",
    "string_too_short": lambda c, v: f"must have at least {c.get('min_length')} character(s), got {short_repr(v)}",
    "string_too_long": lambda c, v: f"must have at most {c.get('max_length')} characters, got {len(v) if isinstance(v, str) else '?'}",
    "too_long": lambda c, v: f"must have at most {c.get('max_length')} items, got {c.get('actual_length')}",
    "too_short": lambda c, v: f"must have at least {c.get('min_length')} items, got {c.get('actual_length')}",
    "int_type": lambda c, v: f"must be an integer, got {short_repr(v)}",
    "float_type": lambda c, v: f"must be a number, got {short_repr(v)}",
    "bool_type": lambda c, v: f"must be true or false, got {short_repr(v)}",
    "string_type": lambda c, v: f"must be a string, got {short_repr(v)}",
    "finite_number": lambda c, v: f"must be a finite number, got {short_repr(v)}",
    "dict_type": lambda c, v: f"must be a mapping, got {short_repr(v)}",
    "model_type": lambda c, v: f"must be a mapping, got {short_repr(v)}",
    "list_type": lambda c, v: f"must be a list, got {short_repr(v)}",
    "tuple_type": lambda c, v: f"must be a list of two values, got {short_repr(v)}",
}

_UNION_TAGS = ("str", "PatternRef", "function-after")


def _pick_error(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """The most useful of pydantic's errors: for ``pattern`` (a name or a
    mapping), the mapping's own error beats "should be a string"; an unknown
    key beats "is required" (``n_layer: 4`` is a typo of ``n_layers``)."""
    for err in errors:
        if "PatternRef" in err["loc"] and err["type"] != "model_type":
            return err
    if errors[0]["type"] == "missing":
        for err in errors:
            if err["type"] == "extra_forbidden":
                return err
    return errors[0]


def _known_keys() -> set[str]:
    return {name for model in (Design, Stack, Rule, When, LayerEntry, PatternRef, Repeat, Flow, LayerParams) for name in model.model_fields}


def _unknown_key_message(key: Any) -> str:
    import difflib

    close = difflib.get_close_matches(str(key)[:64], sorted(_known_keys()), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}check the spelling; see `python -m backend schema`)"


def _pydantic_to_design_error(exc: ValidationError) -> DesignError:
    errors = exc.errors(include_url=False)
    err = _pick_error(errors)
    loc = [p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]
    ctx = err.get("ctx") or {}
    original = ctx.get("error")
    if isinstance(original, DesignError):
        prefix = format_path(loc)
        path = original.path if original.path.startswith(prefix) or prefix == "<design>" else f"{prefix}.{original.path}"
        return DesignError(path, original.message)
    if isinstance(original, _Located):
        return DesignError(format_path(loc + original.parts), original.message)
    make = _MESSAGES.get(err["type"])
    value = err.get("input")
    if err["type"] == "extra_forbidden" and loc:
        return DesignError(format_path(loc), _unknown_key_message(loc[-1]))
    if loc and loc[-1] == "pattern" and err["type"] in ("string_type", "model_type"):
        return DesignError(format_path(loc), f"must be a pattern name or a mapping {{name, params}}, got {short_repr(value)}")
    if make:
        message = make(ctx, value)
    else:
        message = f"{err['msg'][0].lower()}{err['msg'][1:]}, got {short_repr(value)}"
    return DesignError(format_path(loc), message)


def design_from_dict(data: Any) -> Design:
    if is_hf_config(data):  # a Hugging Face config.json (recognised by `model_type`): backend.hf
        data = import_hf(data)
    if not isinstance(data, dict):
        raise DesignError("<design>", f"must be a mapping of design fields, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise DesignError("<design>", f"keys must be strings, got {short_repr(key)}")
    try:
        return Design.model_validate(data)
    except ValidationError as exc:
        raise _pydantic_to_design_error(exc) from None
    except RecursionError:
        raise DesignError("<design>", "is nested too deeply") from None


def parse_design_text(text: str | bytes, fmt: str | None = None, source: str = "<text>") -> Design:
    """Parse YAML or JSON text. ``fmt`` is 'yaml', 'json' or None (sniffed)."""
    return design_from_dict(parse_document(text, fmt, source))


def load_preset(name: str) -> Design:
    """The design of a preset (a YAML file in ``presets/``, see ``backend.presets``)."""
    path = find_preset(name)
    if path is None:
        raise DesignError(name, f"unknown preset (known: {', '.join(list_presets())})")
    return parse_design_text(path.read_bytes(), "yaml", source=str(path))


def load_design(source: Union[str, Path, dict, Design]) -> Design:
    """A Design from a Design, a dict, a file path, a preset name, or YAML/JSON text."""
    if isinstance(source, Design):
        return source
    if isinstance(source, dict):
        return design_from_dict(source)
    text_like = isinstance(source, str) and ("\n" in source or source.lstrip()[:1] in "{[")
    if not text_like:
        path = Path(source)
        if path.is_file():
            return design_from_dict(read_document(path))
        preset = find_preset(str(source))
        if preset is not None:
            return parse_design_text(preset.read_bytes(), "yaml", source=str(preset))
        if path.suffix.lower() in (".yaml", ".yml", ".json") or "/" in str(source):
            raise DesignError(str(source), "no such file")
        raise DesignError(str(source), "is neither a design file nor a preset name (see `python -m backend presets`)")
    return parse_design_text(source)


def json_schema() -> dict[str, Any]:
    schema = Design.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Transformer design"
    return schema


KIND_NAMES = {"attention": tuple(ATTENTION), "mlp": tuple(MLP), "norm": tuple(NORM), "positional": tuple(POSITIONAL)}
