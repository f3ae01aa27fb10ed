"""Architecture diagram: a Graphviz DOT description of a resolved plan (pure Python, no rendering).

The diagram reads the :class:`~backend.plan.Plan` only. Per stack it folds

* repetition: a cycle / grouped block becomes one cluster marked ``x factor``
  (shared weights, dashed border, a back edge "repeat"); a layerwise-repeated
  layer becomes one node marked ``each x factor``;
* runs of consecutive unique layers with the same configuration into one node
  (``layers 4-7``, separate weights).

:func:`segments` exposes the folding as data (used by the tests: the executed
counts add up to the stack's depth). Render with ``graphviz.Source(dot)`` or
``dot -Tsvg``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .plan import Plan, ResolvedLayer, StackPlan
from .registry import ATTENTION


def attention_fill(kind: str) -> str:
    """A pale node fill from the kind's own colour (``KindInfo.color``), 70 % towards white."""
    info = ATTENTION.get(kind)
    hexcol = (info.color if info else "") or "#BBBBBB"
    r, g, b = (int(hexcol[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * 0.7):02X}" for c in (r, g, b))


SHARED_COLOR = "#8E44AD"


@dataclass(frozen=True)
class Run:
    """Consecutive unique layers ``first..last`` with one configuration."""

    first: int
    last: int
    layer: ResolvedLayer  # the first of them (all share kinds and params)

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Segment:
    """A folded part of a stack: ``runs`` of unique layers executed ``times`` over.

    ``kind`` is ``plain`` (no sharing), ``block`` (the runs execute in order,
    the whole block ``times`` times: cycle / grouped) or ``each`` (every layer
    executes ``times`` consecutively: layerwise).
    """

    kind: str
    runs: tuple[Run, ...]
    times: int
    label: str = ""

    @property
    def unique_layers(self) -> int:
        return sum(r.count for r in self.runs)

    @property
    def executed_layers(self) -> int:
        return self.unique_layers * self.times


def _same(a: ResolvedLayer, b: ResolvedLayer) -> bool:
    return (a.attention, a.mlp, a.norm, repr(sorted((k, sorted(v.items())) for k, v in a.params.items()))) == \
        (b.attention, b.mlp, b.norm, repr(sorted((k, sorted(v.items())) for k, v in b.params.items())))


def _runs(layers: list[ResolvedLayer]) -> tuple[Run, ...]:
    out: list[Run] = []
    for layer in layers:
        if out and _same(out[-1].layer, layer) and out[-1].last == layer.unique_index - 1:
            out[-1] = Run(out[-1].first, layer.unique_index, out[-1].layer)
        else:
            out.append(Run(layer.unique_index, layer.unique_index, layer))
    return tuple(out)


def segments(plan: Plan, stack: str) -> list[Segment]:
    """The folded structure of one stack (see :class:`Segment`)."""
    sp: StackPlan = plan.stacks[stack]
    rep = plan.design.stacks()[stack].repeat
    unique = list(sp.unique)
    if rep.mode == "cycle" and rep.factor > 1:
        return [Segment("block", _runs(unique), rep.factor, f"cycle x{rep.factor} (shared weights)")]
    if rep.mode == "layerwise" and rep.factor > 1:
        return [Segment("each", _runs(unique), rep.factor, f"layerwise: each layer x{rep.factor} (shared weights)")]
    if rep.mode == "grouped":
        out, start = [], 0
        for g, (size, factor) in enumerate(zip(rep.groups or [], rep.group_factors or [])):
            part = unique[start:start + size]
            label = f"group {g}: x{factor} (shared weights)" if factor > 1 else f"group {g}"
            out.append(Segment("block" if factor > 1 else "plain", _runs(part), factor, label))
            start += size
        return out
    return [Segment("plain", _runs(unique), 1)]


# ---------------------------------------------------------------------------
# DOT text


def _q(text: str) -> str:
    """A DOT double-quoted string (``\\n`` stays a line break)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _params(params: dict[str, Any]) -> str:
    if not params:
        return ""
    return " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"


def _block_label(run: Run, seg: Segment, design: Any) -> str:
    layer = run.layer
    span = f"layer {run.first}" if run.count == 1 else f"layers {run.first}-{run.last}"
    if run.count > 1:
        span += f"  ({run.count} distinct layers, same config)"
    if seg.kind == "each":
        span += f"\nexecuted x{seg.times} each (shared weights)"
    lines = [span, f"attention: {layer.attention}{_params(layer.params.get('attention', {}))}"]
    if layer.cross:
        lines.append(f"cross-attention{_params(layer.params.get('cross', {}))}")
    lines.append(f"MLP: {layer.mlp}{_params(layer.params.get('mlp', {}))}")
    lines.append(f"norm: {layer.norm} ({design.norm_placement})")
    return "\n".join(lines)


def _input_label(design: Any, stack: str) -> str:
    if design.vocab_size is not None:
        what = "source tokens" if stack == "encoder" else "target tokens" if stack == "decoder" else "tokens"
        return f"{what}\nembedding {design.vocab_size} x {design.hidden_size}"
    return f"features ({design.input_dim})\nlinear {design.input_dim} -> {design.hidden_size}"


def _head_label(design: Any) -> str:
    t = design.task
    if t in ("lm", "mlm", "seq2seq"):
        tied = "tied to the embedding" if design.tied else "untied"
        return f"{'LM' if t != 'mlm' else 'MLM'} head -> {design.vocab_size} logits ({tied})"
    return f"{t} head -> {design.output_dim}"


def plan_to_dot(plan: Plan, *, title: str | None = None) -> str:
    """DOT source of the architecture: inputs, folded stacks, final norm and head."""
    design = plan.design
    out: list[str] = [
        "digraph architecture {",
        "  graph [rankdir=TB, fontname=\"Helvetica\", fontsize=11, nodesep=0.3, ranksep=0.35, compound=true, "
        f"labelloc=t, label={_q(title or design.name)}];",
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#F5F5F5\", fontname=\"Helvetica\", fontsize=10];",
        "  edge [fontname=\"Helvetica\", fontsize=9, color=\"#555555\"];",
    ]
    pos = "" if design.positional == "none" else f"\npositional: {design.positional}"
    last_of: dict[str, str] = {}
    first_of: dict[str, str] = {}
    for stack, sp in plan.stacks.items():
        cfg = design.stacks()[stack]
        inp = f"{stack}_input"
        out.append(f"  {inp} [label={_q(_input_label(design, stack) + pos)}, shape=box, fillcolor=\"#FFFFFF\"];")
        prev = inp
        flow = "" if cfg.flow.mode == "none" else f"\nflow speed: {cfg.flow.mode}{' per layer' if cfg.flow.per_layer else ''}"
        causal = "causal" if sp.causal else "bidirectional"
        out.append(f"  subgraph cluster_{stack} {{")
        out.append(f"    label={_q(f'{stack}: {sp.depth} executed layers ({sp.n_unique} unique), {causal}{flow}')};")
        out.append("    style=\"rounded\"; color=\"#999999\";")
        first_node = None
        edges: list[str] = []  # emitted outside the cluster, so the input node stays outside it
        for s, seg in enumerate(segments(plan, stack)):
            indent = "    "
            if seg.kind == "block":
                out.append(f"    subgraph cluster_{stack}_seg{s} {{")
                out.append(f"      label={_q(seg.label)}; style=\"rounded,dashed,bold\"; color=\"{SHARED_COLOR}\"; fontcolor=\"{SHARED_COLOR}\";")
                indent = "      "
            nodes = []
            for r, run in enumerate(seg.runs):
                node = f"{stack}_s{s}_r{r}"
                fill = attention_fill(run.layer.attention)
                extra = f", color=\"{SHARED_COLOR}\", penwidth=2" if seg.kind in ("block", "each") else ""
                out.append(f"{indent}{node} [label={_q(_block_label(run, seg, design))}, fillcolor=\"{fill}\"{extra}];")
                nodes.append(node)
            if seg.kind == "block":
                out.append("    }")
            for node in nodes:
                edges.append(f"  {prev} -> {node};")
                prev = node
                first_node = first_node or node
            if seg.kind == "block" and len(nodes) >= 1:
                edges.append(f"  {nodes[-1]} -> {nodes[0]} [style=dashed, color=\"{SHARED_COLOR}\", fontcolor=\"{SHARED_COLOR}\", "
                           f"label={_q(f'repeat x{seg.times}')}, constraint=false];")
        out.append("  }")
        out.extend(edges)
        first_of[stack], last_of[stack] = first_node or inp, prev
        if design.final_norm:
            fn = f"{stack}_final_norm"
            out.append(f"  {fn} [label={_q(f'final norm: {design.norm}')}, fillcolor=\"#E8E8E8\"];")
            out.append(f"  {prev} -> {fn};")
            last_of[stack] = fn
    head_from = last_of.get("decoder") or last_of.get("layers") or last_of.get("encoder")
    if "encoder" in plan.stacks and "decoder" in plan.stacks:
        out.append(f"  {last_of['encoder']} -> {first_of['decoder']} [style=dashed, label=\"memory (cross-attention K/V)\", "
                   "lhead=cluster_decoder];")
    out.append(f"  head [label={_q(_head_label(design))}, fillcolor=\"#FFFFFF\", shape=box];")
    out.append(f"  {head_from} -> head;")
    out.append("}")
    return "\n".join(out) + "\n"


__all__ = ["Run", "Segment", "segments", "plan_to_dot"]
