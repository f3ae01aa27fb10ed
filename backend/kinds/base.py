"""The kind contract: what every layer kind declares about itself (docs/KINDS.md).

A kind (an attention / token mixer, an MLP, a norm or a positional scheme) is
one declaration -- a :class:`KindInfo` subclass instance -- plus the
``nn.Module`` it names by dotted path. The declaration carries everything the
rest of the program needs to know about the kind, so analysis, memory, plan
checks, the diagram and the app *ask the kind* and never name one:

* identity and display: ``name``, ``label``, ``abbrev``, ``color``,
  ``aliases`` (string-notation names), ``description``, ``paper``;
* its parameter schema (``params``: :class:`ParamInfo` per key);
* where it may run (attention: ``causal``, ``bidirectional``, ``cross``) and
  what it supports (``cacheable``, ``uses_positions``, ``softmax``);
* :meth:`KindInfo.check`: its own validation of a resolved layer;
* closed-form counts: :meth:`AttentionKind.flops` (dense and causal-aware,
  with the kind's own mask semantics in :meth:`AttentionKind.pairs`),
  ``param_count``;
* :meth:`AttentionKind.cache`: its decode cache layout (bytes per token, a
  token cap, constant state bytes) as functions of the resolved config;
* ``activation_elems``: the activation footprint hook (elements per token
  saved for backward).

Declarations import no torch: validation and the plan run before any torch
code. ``model`` arguments are anything with the model-level sizes of a
:class:`~backend.spec.Design` (``hidden_size``, ``n_heads``, ``kv_heads``,
``attn_head_dim``, ``ffn_hidden``, ``max_seq_len``, ``positional``,
``bias``, ``qkv_bias``); ``cfg`` is the layer's params for this kind with
defaults filled in.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import DesignError, short_repr

ParamType = Literal["int", "float", "bool", "choice", "str"]
Category = Literal["attention", "mlp", "norm", "positional"]


# The registries themselves (name -> declaration per category), filled by ``backend.registry``.
# They live here so a declaration can look up another kind (a MoE its expert) without a cycle.
REGISTRIES: dict[str, dict[str, "KindInfo"]] = {"attention": {}, "mlp": {}, "norm": {}, "positional": {}}


class KindError(ValueError):
    """A kind's own check failed; ``param`` names the offending parameter of the kind, if one."""

    def __init__(self, message: str, param: str | None = None):
        self.message = message
        self.param = param
        super().__init__(message)


@dataclass(frozen=True)
class ParamInfo:
    type: ParamType
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False  # None is a legal value (meaning "derive it")

    def check(self, value: Any, path: list[Any]) -> Any:
        """Return the validated value or raise DesignError naming ``path``."""
        if value is None:
            if self.nullable:
                return None
            raise DesignError.at(path, f"must not be null, got {short_repr(value)}")
        if self.type == "bool":
            if not isinstance(value, bool):
                raise DesignError.at(path, f"must be true or false, got {short_repr(value)}")
            return value
        if self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise DesignError.at(path, f"must be an integer, got {short_repr(value)}")
        elif self.type == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DesignError.at(path, f"must be a number, got {short_repr(value)}")
            if value != value or value in (float("inf"), float("-inf")):
                raise DesignError.at(path, f"must be finite, got {short_repr(value)}")
            value = float(value)
        elif self.type in ("choice", "str"):
            if not isinstance(value, str):
                raise DesignError.at(path, f"must be a string, got {short_repr(value)}")
        if self.choices is not None and value not in self.choices:
            opts = ", ".join(map(str, self.choices))
            raise DesignError.at(path, f"must be one of {opts}; got {short_repr(value)}")
        if self.min is not None and value < self.min:
            raise DesignError.at(path, f"must be >= {_num(self.min)}, got {short_repr(value)}")
        if self.max is not None and value > self.max:
            raise DesignError.at(path, f"must be <= {_num(self.max)}, got {short_repr(value)}")
        return value


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class CacheLayout:
    """What one executed layer's decode cache holds (per sequence of the batch).

    ``bytes_per_token``: grows with every decoded token, up to ``max_tokens``
    tokens (None = no cap; a sliding window caps it); ``state_bytes``: a
    constant per-sequence state (recurrent prefix sums, SSM state).
    """

    bytes_per_token: int = 0
    max_tokens: int | None = None
    state_bytes: int = 0

    def at(self, tokens: int) -> int:
        """Bytes after ``tokens`` tokens."""
        t = min(tokens, self.max_tokens) if self.max_tokens else tokens
        return self.bytes_per_token * t + self.state_bytes


NO_CACHE = CacheLayout()


@dataclass(frozen=True)
class KindInfo:
    """One kind's declaration. Subclasses per category add the category's hooks."""

    name: str
    category: Category
    module: str  # "backend.nn.attention:SelfSDPA", imported lazily
    description: str
    paper: str = ""
    params: dict[str, ParamInfo] = field(default_factory=dict)
    label: str = ""  # display name (default: the name)
    abbrev: str = ""  # short label for grid cells and the diagram (default: NAME upper-cased)
    color: str = ""  # grid colour, "#RRGGBB" (default: picked from a fixed palette)
    aliases: tuple[str, ...] = ()  # extra names in the string notation (upper case), e.g. ("SDPA",)
    roles: tuple[str, ...] = ()  # registry roles this kind fills ("default", "full", "cheap"; the HF importer's: backend/hf.py)
    identity: bool = False  # an empty sublayer (attention / mlp "none"): the block skips the branch and its norms

    # ---- identity -------------------------------------------------------
    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def short(self) -> str:
        return self.abbrev or self.name.upper()

    @property
    def token(self) -> str:
        """The canonical upper-case name in the string notation (the first alias, else NAME)."""
        return self.aliases[0] if self.aliases else self.name.upper()

    def load(self) -> type:
        mod, _, cls = self.module.partition(":")
        return getattr(importlib.import_module(mod), cls)

    # ---- parameters -----------------------------------------------------
    def resolve_params(self, given: dict[str, Any] | None, path: list[Any]) -> dict[str, Any]:
        """Defaults filled in, every given key checked against the schema."""
        given = given or {}
        if not isinstance(given, dict):
            raise DesignError.at(path, f"must be a mapping, got {short_repr(given)}")
        out = {k: p.default for k, p in self.params.items()}
        for key, value in given.items():
            if key not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise DesignError.at(
                    path + [key], f"unknown parameter for {self.category} kind '{self.name}' (known: {known})"
                )
            out[key] = self.params[key].check(value, path + [key])
        return out

    # ---- hooks ------------------------------------------------------------
    def check(self, model: Any, cfg: dict[str, Any], *, causal: bool, positional: Any = None) -> None:
        """Cross-field checks of a resolved layer against the model; raise :class:`KindError`.

        ``positional`` is the model's :class:`PositionalKind` declaration.

        Anything the module's constructor or forward would refuse must be
        refused here, so that a design the validator accepts also builds.
        """

    def max_positions(self, model: Any, cfg: dict[str, Any]) -> tuple[int, str] | None:
        """(the longest sequence the built module accepts, why) or None for no limit.

        The analysis warns when asked for figures past it (``backend.plan.length_limit``).
        """
        return None

    def causal_warning(self, cfg: dict[str, Any]) -> str | None:
        """A warning when a layer with these params sits in a causal stack and runs, but is not causal
        by construction (validation shows it; the smoke test marks causality / cache checks n/a)."""
        return None

    def _missing(self, hook: str) -> NotImplementedError:
        return NotImplementedError(f"{self.category} kind {self.name!r} does not declare {hook}() (docs/KINDS.md)")


@dataclass(frozen=True)
class AttentionKind(KindInfo):
    """A token mixer. Counts are per sublayer call; ``b`` batch, ``s`` sequence length."""

    causal: bool = True  # can run in a causal (decoder) stack
    bidirectional: bool = True  # can run in a bidirectional (encoder) stack
    cacheable: bool = False  # supports incremental decoding with a cache (in causal stacks)
    uses_positions: bool = True  # applies rope / alibi when the model uses them
    softmax: bool = False  # has an S x S softmax score matrix (may serve as cross-attention, takes score biases)
    takes_score_bias: bool = False  # its forward takes ``score_bias`` (a positional ``bias_table``: T5's relative bias)
    causal_alternative: str = ""  # kind to suggest when this one cannot run in a causal stack

    def window(self, cfg: dict[str, Any]) -> int:
        """Sliding-window size as this kind reads its params (0 = full): query i sees keys with i - j < w."""
        return 0

    def pairs(self, cfg: dict[str, Any], s: int, *, causal: bool) -> int:
        """(query, key) pairs of an ``s x s`` score matrix the kind's mask allows."""
        return attention_pairs(s, s, causal=causal, window=self.window(cfg))

    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int, *, causal: bool) -> tuple[float, float]:
        """(dense, causal-aware) forward FLOPs (DESIGN.md section 5)."""
        raise self._missing("flops")

    def param_count(self, model: Any, cfg: dict[str, Any], *, causal: bool) -> int:
        """Parameters of one module of this kind in a causal or bidirectional stack (closed form)."""
        raise self._missing("param_count")

    def cache(self, model: Any, cfg: dict[str, Any], dtype_bytes: int) -> CacheLayout:
        """Decode cache of one executed layer in a causal stack (``NO_CACHE`` when not cacheable)."""
        if self.cacheable:
            raise self._missing("cache")
        return NO_CACHE

    def activation_elems(self, model: Any, cfg: dict[str, Any], s: int, *, fused: bool) -> tuple[float, float]:
        """(elements per token saved for backward, dropout-mask elements per token) of the sublayer."""
        raise self._missing("activation_elems")


@dataclass(frozen=True)
class MlpKind(KindInfo):
    def flops(self, model: Any, cfg: dict[str, Any], b: int, s: int) -> float:
        raise self._missing("flops")

    def param_count(self, model: Any, cfg: dict[str, Any]) -> int:
        raise self._missing("param_count")

    def activation_elems(self, model: Any, cfg: dict[str, Any]) -> float:
        """Elements per token saved for backward (without the norm input)."""
        raise self._missing("activation_elems")

    def sub_kinds(self, cfg: dict[str, Any]) -> tuple[str, ...]:
        """Other MLP kinds this one builds (a MoE's expert kind), so their modules are imported."""
        return ()

    def affine_probes(self, cfg: dict[str, Any]) -> tuple[tuple[str, int, int], ...]:
        """``(param, value, probe)`` for each integer param in which every count of this layer (parameters,
        FLOPs, saved bytes) is affine when the others are held fixed (so the counts are multilinear in
        them jointly). The analysis measures the module at the ``2^n`` corners ``probe`` / ``probe + 1``
        and interpolates to ``value`` exactly (``backend.analysis.parts.per_layer``), so its cost grows
        neither with ``value`` (a MoE's experts) nor with the number of distinct values (layers that
        differ only in width share their probes when ``probe`` is a fixed number).
        Empty: measure the module as configured."""
        return ()


@dataclass(frozen=True)
class NormKind(KindInfo):
    weight_per_dim: int = 1  # parameters per hidden unit (a gain vector)
    fixed_params: int = 0  # parameters independent of the width (ScaleNorm's scale, ReZero's alpha)
    # False for a kind that normalises nothing and only scales residual branches (ReZero): it cannot
    # stand alone on a tensor (embed_norm, the MLM head transform's norm), where its gate would be unused
    normalizes: bool = True

    def param_count(self, model: Any) -> int:
        return model.hidden_size * self.weight_per_dim + self.fixed_params

    def flops(self, model: Any, b: int, s: int) -> float:
        """Matmul FLOPs of one norm call (element-wise work counts zero)."""
        return 0.0


@dataclass(frozen=True)
class PositionalKind(KindInfo):
    score_bias: bool = False  # adds a bias to attention scores (needs a softmax score matrix)
    rotary: bool = False  # rotates pairs of q/k channels inside attention
    table: bool = False  # a learned per-position table of max_seq_len rows
    # a learned score bias the model computes once per stack and hands to each attention module that
    # declares ``takes_score_bias`` (T5's bucketed relative bias); other kinds using positions are refused
    bias_table: bool = False

    def max_positions(self, model: Any, cfg: dict[str, Any]) -> tuple[int, str] | None:
        if self.table:  # LearnedPositions has max_seq_len rows; the model refuses later positions
            return model.max_seq_len, f"{self.name} positions: a table of max_seq_len = {model.max_seq_len} rows"
        return None

    def param_count(self, model: Any) -> int:
        """Parameters of the positional module(s) of the whole model (``positional_per_stack``: one per stack)."""
        if not self.table:
            return 0
        # a table of max_seq_len + position_offset rows (RoBERTa / BART), one per stack with positional_per_stack
        rows = model.max_seq_len + getattr(model, "position_offset", 0)
        return rows * model.hidden_size * (len(model.stacks()) if getattr(model, "positional_per_stack", False) else 1)


# ---------------------------------------------------------------------------
# Shared arithmetic of the declarations (no torch).


def attention_pairs(sq: int, sk: int, *, causal: bool, window: int = 0, prefix: int = 0) -> int:
    """Number of (query, key) pairs a mask allows (queries and keys aligned at position 0).

    Causal: query ``i`` sees keys ``0..i``; a window ``w`` keeps ``i - j < w``
    (and ``j - i < w`` when bidirectional); ``prefix`` (prefix-LM, causal
    only) lets every query also see the first ``prefix`` keys.
    """
    if not causal:
        if not window:
            return sq * sk
        s = min(sq, sk)
        d = min(window - 1, s - 1)
        return s + 2 * (d * s - d * (d + 1) // 2)
    s = sq
    if prefix and window:  # rare combination: count row by row
        p = min(prefix, s)
        total = 0
        for i in range(s):
            lo = max(0, i - window + 1)
            total += p if i < p else (i - lo + 1) + min(lo, p)
        return total
    if window and window < s:
        base = window * (window + 1) // 2 + (s - window) * window
    else:
        base = s * (s + 1) // 2
    if prefix:
        p = min(prefix, s)
        base += p * (p - 1) // 2
    return base


def fft_flops(n: int, batch: int = 1, *, real: bool = False) -> float:
    """``5 N log2 N`` per complex N-point transform, half for a real one (FFTW's "mflops" convention)."""
    if n <= 1:
        return 0.0
    c = 2.5 if real else 5.0
    return batch * c * n * math.log2(n)


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def dims(model: Any) -> tuple[int, int, int, int]:
    """(D, H, KV, Dh) of a model."""
    return model.hidden_size, model.n_heads, model.kv_heads, model.attn_head_dim


def qkvo_flops(model: Any, b: int, s: int) -> float:
    """q/k/v/o projections of (GQA) multi-head attention."""
    D, H, KV, Dh = dims(model)
    return 2 * b * s * D * (H * Dh + 2 * KV * Dh) + 2 * b * s * H * Dh * D


def qkvo_params(model: Any) -> int:
    """Parameters of ``common.add_qkvo``'s projections (biases: ``bias`` or ``qkv_bias`` on q/k/v, ``bias`` on o)."""
    D, H, KV, Dh = dims(model)
    w = D * (H * Dh + 2 * KV * Dh) + H * Dh * D
    if model.bias or model.qkv_bias:
        w += H * Dh + 2 * KV * Dh
    if model.bias:
        w += D
    return w
