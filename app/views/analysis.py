"""Analysis: per-layer params and FLOPs, parameter treemap, scaling with sequence length, memory."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import grid
import state
import text
import ui

COMPONENT_COLORS = {"attention": "#4C78A8", "mlp": "#F58518", "norm": "#A0A0A0", "other": "#B279A2",
                    "embeddings": "#54A24B", "head": "#E45756"}

st.title("Analysis")
ui.banner()
design = state.design()
djson = state.design_json()

c = st.columns(4)
seq_len = c[0].number_input("Sequence length", min_value=1, max_value=1_048_576, value=design.max_seq_len, step=1,
                            key=state.key("an_seq"), help="Defaults to max_seq_len")
batch = c[1].number_input("Batch", min_value=1, max_value=65536, value=1, step=1, key="an_batch")
dtype = c[2].selectbox("dtype", ["bf16", "fp16", "fp32", "int8"], key="an_dtype")
causal = c[3].toggle("Causal-aware FLOPs", value=False, key="an_causal",
                     help="Count only the (query, key) pairs the causal / window mask allows")


def _legend(fig: go.Figure, height: int = 320) -> go.Figure:
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0})
    fig.update_xaxes(exponentformat="SI")
    fig.update_yaxes(exponentformat="SI")
    return fig


with state.shown_errors("the analysis"):
    with st.spinner("Analysing..."):
        r = state.cached_analysis(djson, int(seq_len), int(batch), dtype)
    p, f, m = r["params"], r["flops"], r["memory"]
    cols = st.columns(5)
    cols[0].metric("Parameters", ui.fmt_count(p["total"]), help=f"{p['total']:,} (embedding {p['embedding']:,}, "
                   f"non-embedding {p['non_embedding']:,})")
    cols[1].metric("Non-embedding", ui.fmt_count(p["non_embedding"]))
    cols[2].metric("Forward FLOPs", ui.fmt_count(f["forward_causal" if causal else "forward"]),
                   help=f"dense {f['forward']:,}; causal-aware {f['forward_causal']:,}")
    cols[3].metric("Training FLOPs / step", ui.fmt_count(f["training_causal" if causal else "training"]))
    cols[4].metric("KV cache at this length", ui.fmt_bytes(m["kv_cache_bytes_at_seq_len"]),
                   help=f"{ui.fmt_bytes(m['kv_cache_bytes_per_token'])} per token; "
                        f"{ui.fmt_bytes(m['kv_cache_bytes_at_max_seq_len'])} at max_seq_len")
    for w in r.get("warnings") or []:
        st.caption(f":material/warning: {ui.md(w)}")

    # ---- per layer
    st.subheader("Per layer")
    layers = r["layers"]
    multi = len({e["stack"] for e in layers}) > 1
    xs = [f"{e['stack'][:3]} {e['index']}" if multi else str(e["index"]) for e in layers]
    hover = [f"u{e['unique_index']} · {e['attention']} / {e['mlp']} / {e['norm']}" for e in layers]
    t1, t2 = st.columns(2)
    with t1:
        fig = go.Figure()
        for comp in ("attention", "mlp", "norm", "other"):
            ys = [e["params_components"].get(comp, 0) for e in layers]
            if any(ys):
                fig.add_bar(x=xs, y=ys, name=comp, marker_color=COMPONENT_COLORS[comp], customdata=hover,
                            hovertemplate="layer %{x}: %{y:,}<br>%{customdata}<extra>" + comp + "</extra>")
        st.markdown("**Parameters per executed layer**")
        fig.update_layout(barmode="stack", xaxis_title="layer", yaxis_title="parameters")
        st.plotly_chart(_legend(fig), width="stretch", key="an_params_bars")
    with t2:
        fig = go.Figure()
        fkey = "flops_components"
        for comp in ("attention", "mlp", "norm"):
            ys = [e[fkey].get(comp, 0) for e in layers]
            if any(ys):
                fig.add_bar(x=xs, y=ys, name=comp, marker_color=COMPONENT_COLORS[comp], customdata=hover,
                            hovertemplate="layer %{x}: %{y:.3s}<br>%{customdata}<extra>" + comp + "</extra>")
        st.markdown(f"**Forward FLOPs per executed layer** (seq {r['seq_len']}, batch {r['batch']}, dense)")
        fig.update_layout(barmode="stack", xaxis_title="layer", yaxis_title="FLOPs")
        st.plotly_chart(_legend(fig), width="stretch", key="an_flops_bars")
    if any(e["unique_index"] != e["index"] for e in layers):
        st.caption("Shared layers appear at every execution: their FLOPs count every pass; their parameters are counted "
                   "once in the totals.")

    # ---- treemap of parameters (unique layers: shared weights once)
    st.subheader("Where the parameters are")
    ids, labels, parents, values, colors = ["model"], [text.plotly(design.name)], [""], [0], ["#FFFFFF"]
    comps = p["components"]
    for comp in ("embeddings", "head", "other"):
        if comps.get(comp):
            ids.append(comp)
            labels.append(comp)
            parents.append("model")
            values.append(comps[comp])
            colors.append(COMPONENT_COLORS[comp])
    seen = set()
    for e in layers:
        key = (e["stack"], e["unique_index"])
        if key in seen:
            continue
        seen.add(key)
        if e["stack"] not in ids:
            ids.append(e["stack"])
            labels.append(f"{e['stack']} stack")
            parents.append("model")
            values.append(0)
            colors.append("#EEEEEE")
        lid = f"{e['stack']}/u{e['unique_index']}"
        ids.append(lid)
        labels.append(f"u{e['unique_index']} {e['attention']}/{e['mlp']}")
        parents.append(e["stack"])
        values.append(0)
        colors.append(grid.color("attention", e["attention"]))
        for comp, v in e["params_components"].items():
            if v:
                ids.append(f"{lid}/{comp}")
                labels.append(comp)
                parents.append(lid)
                values.append(v)
                colors.append(COMPONENT_COLORS.get(comp, "#CCCCCC"))
    fig = go.Figure(go.Treemap(ids=ids, labels=labels, parents=parents, values=values, branchvalues="remainder",
                               marker={"colors": colors}, maxdepth=3,
                               hovertemplate="%{label}<br>%{percentRoot:.2%} of all parameters<extra></extra>",
                               texttemplate="%{label}<br>%{percentRoot:.1%}"))
    fig.update_layout(height=420, margin={"l": 0, "r": 0, "t": 10, "b": 0})
    st.plotly_chart(fig, width="stretch", key="an_treemap")
    st.caption("Unique layers only (shared weights count once). Click a block to zoom in.")

    # ---- scaling with sequence length
    st.subheader("Scaling with sequence length")
    top = max(int(design.max_seq_len), 128)
    lens = sorted({2 ** k for k in range(6, 21) if 2 ** k <= top} | {top})
    if len(lens) > 12:
        lens = lens[-12:]
    with st.spinner("Measuring FLOPs at each length..."):
        curve = state.cached_flops_curve(djson, tuple(lens))
        per_len = {s: state.cached_analysis(djson, s, 1, dtype) for s in lens}
    kinds = list(dict.fromkeys(e["attention"] for e in layers))
    s1, s2 = st.columns(2)
    with s1:
        fig = go.Figure()
        fig.add_scatter(x=lens, y=[c_["forward"] for c_ in curve], name="whole model (dense)", mode="lines+markers",
                        line={"color": "#333333", "width": 3})
        fig.add_scatter(x=lens, y=[c_["forward_causal"] for c_ in curve], name="whole model (causal-aware)",
                        mode="lines", line={"color": "#333333", "dash": "dot"})
        for kind in kinds:
            ys = []
            for s in lens:
                first = next((e for e in per_len[s]["layers"] if e["attention"] == kind), None)
                ys.append(first["flops_components"]["attention"] if first else None)
            fig.add_scatter(x=lens, y=ys, name=f"one {kind} layer (attention part)", mode="lines+markers",
                            line={"color": grid.color("attention", kind)})
        fig.update_xaxes(type="log", title="sequence length", dtick=0.30103)
        fig.update_yaxes(type="log", title="forward FLOPs (batch 1)")
        st.markdown("**FLOPs vs sequence length**")
        st.plotly_chart(_legend(fig, 440), width="stretch", key="an_flops_curve")
    with s2:
        fig = go.Figure()
        fig.add_scatter(x=lens, y=[per_len[s]["memory"]["kv_cache_bytes_at_seq_len"] for s in lens], mode="lines+markers",
                        name=f"KV cache ({dtype}, batch 1)", line={"color": "#4C78A8", "width": 3})
        by_kind = [per_len[s]["memory"]["kv_cache"]["by_kind_at_seq_len_bytes"] for s in lens]
        kv_kinds = list(dict.fromkeys(k for row in by_kind for k in row))
        for kind in kv_kinds if len(kv_kinds) > 1 else []:  # one kind: its curve is the total
            fig.add_scatter(x=lens, y=[row.get(kind) for row in by_kind], mode="lines+markers",
                            name=f"KV cache of the {kind} layers", line={"color": grid.color("attention", kind)})
        fig.add_scatter(x=lens, y=[per_len[s]["memory"]["activations_bytes"] for s in lens], mode="lines",
                        name="training activations (batch 1)", line={"color": "#F58518", "dash": "dot"})
        fig.update_xaxes(type="log", title="sequence length", dtick=0.30103)
        fig.update_yaxes(type="log", title="bytes")
        st.markdown("**Memory vs sequence length**")
        st.plotly_chart(_legend(fig, 440), width="stretch", key="an_kv_curve")
    st.caption("Log-log axes: slope 2 is quadratic in length (softmax attention over S×S), slope 1 linear "
               "(MLP, linear / token-parameter attention), in between n·log n (spectral).")

    # ---- memory breakdown
    st.subheader(f"Memory at batch {r['batch']}, sequence {r['seq_len']}, {dtype}")
    tr = m["training"]
    parts = {
        "inference": {"weights": m["weights_bytes"], "KV cache": m["kv_cache_bytes_at_seq_len"]},
        "training (Adam)": {"weights": tr["weights_bytes"], "gradients": tr["grads_bytes"],
                            "fp32 master weights": tr["master_weights_bytes"], "optimizer state": tr["optimizer_bytes"],
                            "activations": m["activations_bytes"]},
    }
    mem_colors = {"weights": "#4C78A8", "KV cache": "#72B7B2", "gradients": "#F58518", "fp32 master weights": "#EECA3B",
                  "optimizer state": "#E45756", "activations": "#B279A2"}
    fig = go.Figure()
    for comp in mem_colors:
        xsv = [parts[k].get(comp) for k in parts]
        if any(xsv):
            fig.add_bar(y=list(parts), x=xsv, name=comp, orientation="h", marker_color=mem_colors[comp],
                        text=[ui.fmt_bytes(v) if v else "" for v in xsv], textposition="inside",
                        hovertemplate="%{y}: " + comp + " %{text}<extra></extra>")
    fig.update_layout(barmode="stack", xaxis_title="bytes")
    st.plotly_chart(_legend(fig, 280), width="stretch", key="an_memory")
    st.caption(f"Training total {ui.fmt_bytes(tr['total_bytes'])} + activations {ui.fmt_bytes(m['activations_bytes'])}"
               f"{' (gradient checkpointing on)' if design.gradient_checkpointing else ''}. Weights by dtype: "
               + ", ".join(f"{k} {ui.fmt_bytes(v)}" for k, v in m["weights_bytes_by_dtype"].items()) + ".")

    with st.expander("All numbers (JSON)"):
        st.json({k: v for k, v in r.items() if k != "layers"}, expanded=False)
        st.dataframe(pd.DataFrame([{k: v for k, v in e.items() if not isinstance(v, dict)} for e in layers]),
                     hide_index=True, width="stretch")
