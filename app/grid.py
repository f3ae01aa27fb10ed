"""The layer grid: a plotly figure of one stack's executed layers (rendering only).

One column per executed layer, rows attention / MLP / norm, coloured by kind.
A layer that re-executes a shared module is drawn faded and its column label
says which unique layer it runs (``u3``). Plotly heatmaps return no selected
points, so an invisible scatter of square markers sits over the cells: box,
lasso or click selection returns those points (``x`` = executed index).
"""
from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from backend.registry import ATTENTION, MLP, NORM

ROWS = ("attention", "mlp", "norm")  # top to bottom
ROW_LABELS = {"attention": "attention", "mlp": "MLP", "norm": "norm"}

# Colours and labels come from each kind's declaration (``KindInfo.color`` /
# ``KindInfo.short``); a kind without a colour gets a stable one from this palette.
_FALLBACK = ["#1F77B4", "#FF7F0E", "#2CA02C", "#D62728", "#9467BD", "#8C564B", "#E377C2", "#7F7F7F"]
_REGISTRIES = {"attention": ATTENTION, "mlp": MLP, "norm": NORM}


def color(category: str, name: str) -> str:
    reg = _REGISTRIES[category]
    if name in reg and reg[name].color:
        return reg[name].color
    names = list(reg)
    return _FALLBACK[(names.index(name) if name in names else len(name)) % len(_FALLBACK)]


def abbrev(category: str, name: str) -> str:
    reg = _REGISTRIES[category]
    return reg[name].short if name in reg else name[:5]


def _codes() -> tuple[dict[tuple[str, str], int], list[str]]:
    """A global integer code per (category, kind) and the colour of each code."""
    codes: dict[tuple[str, str], int] = {}
    colors: list[str] = []
    for cat, reg in _REGISTRIES.items():
        for name in reg:
            codes[(cat, name)] = len(colors)
            colors.append(color(cat, name))
    return codes, colors


def _discrete_scale(colors: list[str]) -> list[list[Any]]:
    n = len(colors)
    scale: list[list[Any]] = []
    for i, c in enumerate(colors):
        scale.append([i / n, c])
        scale.append([(i + 1) / n, c])
    return scale


def grid_figure(stack_plan: Any, *, selected: list[int] | None = None, height: int = 240) -> go.Figure:
    """The figure for one :class:`~backend.plan.StackPlan`; ``selected`` executed indices are pre-selected."""
    executed = stack_plan.executed
    n = len(executed)
    codes, colors = _codes()
    runs: dict[int, int] = {}
    for layer in executed:
        runs[layer.unique_index] = runs.get(layer.unique_index, 0) + 1
    first_seen: set[int] = set()
    z_first: list[list[Any]] = [[None] * n for _ in ROWS]
    z_repeat: list[list[Any]] = [[None] * n for _ in ROWS]
    text: list[list[str]] = [[""] * n for _ in ROWS]
    show_text = n <= 40
    xs, ys, custom, hover = [], [], [], []
    for j, layer in enumerate(executed):
        repeat = layer.unique_index in first_seen
        first_seen.add(layer.unique_index)
        for r, cat in enumerate(ROWS):
            name = getattr(layer, cat)
            (z_repeat if repeat else z_first)[r][j] = codes[(cat, name)]
            if show_text:
                text[r][j] = abbrev(cat, name)
            xs.append(j)
            ys.append(r)
            custom.append([layer.unique_index, cat, name])
            params = layer.params.get(cat) or {}
            extra = "<br>" + ", ".join(f"{k}={v}" for k, v in params.items()) if params else ""
            shared = f" (shared: runs {runs[layer.unique_index]}x)" if runs[layer.unique_index] > 1 else ""
            hover.append(f"layer {j} → unique u{layer.unique_index}{shared}<br>{cat}: <b>{name}</b>{extra}")
    scale = _discrete_scale(colors)
    common = dict(type="heatmap", x=list(range(n)), y=list(range(len(ROWS))), zmin=-0.5, zmax=len(colors) - 0.5,
                  colorscale=scale, showscale=False, hoverinfo="skip", xgap=2, ygap=2, text=text,
                  texttemplate="%{text}", textfont={"size": 10})
    # Traces and layout are plain dicts and the figure skips plotly's validation: it is the
    # slowest part of a rerun otherwise (~20 ms for 48 layers), and this figure is fixed code.
    data: list[dict[str, Any]] = [dict(common, z=z_first, name="layers")]
    if any(v is not None for row in z_repeat for v in row):
        data.append(dict(common, z=z_repeat, opacity=0.45, name="re-executed (shared)"))
    size = max(8, min(34, int(900 / max(n, 1) * 0.8)))
    sel = set(selected or [])
    data.append(dict(
        type="scatter", x=xs, y=ys, mode="markers", name="cells", customdata=custom, hovertext=hover, hoverinfo="text",
        marker={"symbol": "square", "size": size, "color": "rgba(0,0,0,0)", "line": {"width": 0}},
        selected={"marker": {"color": "rgba(20,20,20,0.45)"}}, unselected={"marker": {"color": "rgba(0,0,0,0)"}},
        showlegend=False, **({"selectedpoints": [p for p, x in enumerate(xs) if x in sel]} if sel else {}),
    ))
    # legend: one entry per kind in use
    for cat in ROWS:
        for name in dict.fromkeys(getattr(layer, cat) for layer in executed):
            data.append(dict(type="scatter", x=[None], y=[None], mode="markers", name=name, legendgroup=cat,
                             marker={"symbol": "square", "size": 12, "color": color(cat, name)}, hoverinfo="skip"))
    ticktext = [f"{j}<br>u{layer.unique_index}" if runs[layer.unique_index] > 1 else str(j) for j, layer in enumerate(executed)]
    step = 1 if n <= 48 else max(1, n // 48)
    layout = dict(
        height=height, margin={"l": 70, "r": 10, "t": 36, "b": 10}, dragmode="select", clickmode="event+select",
        plot_bgcolor="rgba(0,0,0,0)", legend={"orientation": "v", "x": 1.01, "y": 1, "font": {"size": 11}, "tracegroupgap": 6},
        xaxis={"tickmode": "array", "tickvals": list(range(0, n, step)), "ticktext": ticktext[::step], "side": "bottom",
               "range": [-0.5, n - 0.5], "showgrid": False, "zeroline": False, "tickfont": {"size": 10}, "fixedrange": True},
        yaxis={"tickmode": "array", "tickvals": list(range(len(ROWS))), "ticktext": [ROW_LABELS[r] for r in ROWS],
               "autorange": "reversed", "showgrid": False, "zeroline": False, "fixedrange": True},
        uirevision=True,
    )
    return go.Figure(data=data, layout=layout, _validate=False)


def selected_executed(event: Any) -> list[int]:
    """Executed indices selected in a ``st.plotly_chart(on_select=...)`` event (any row)."""
    if not event:
        return []
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    out = set()
    for p in points:
        x = p.get("x")
        if isinstance(x, (int, float)) and p.get("customdata") is not None:
            out.add(int(x))
    return sorted(out)
