"""Training plan: per-GPU memory of a parallel layout, the layouts that fit, FLOP conventions and time."""
from __future__ import annotations

import json
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend.training.hardware import GPUS

import state
import ui

TERMS = {"weights_bytes": ("weights", "#4C78A8"), "grads_bytes": ("gradients", "#72B7B2"),
         "optimizer_bytes": ("optimizer state", "#E45756"), "gathered_weights_bytes": ("gathered layers (ZeRO-3)", "#9D755D"),
         "activations_bytes": ("activations", "#B279A2"), "overhead_bytes": ("overhead", "#A0A0A0")}


st.title("Training plan")
ui.banner()
design = state.design()

c = st.columns(4)
gpu = c[0].selectbox("GPU", list(GPUS), format_func=lambda k: GPUS[k].name, key="tp_gpu")
gpus = c[1].number_input("GPUs", min_value=1, max_value=1 << 20, value=8, step=1, key="tp_gpus")
seq_len = c[2].number_input("Sequence length", min_value=1, max_value=1 << 22, value=design.max_seq_len, step=1,
                            key=state.key("tp_seq"))
tokens_b = c[3].number_input("Training tokens (billions)", min_value=0.001, max_value=1e6, value=1000.0, key="tp_tokens")
c = st.columns(4)
tp = c[0].selectbox("Tensor parallel", [1, 2, 4, 8, 16], key="tp_tp")
sp = c[1].toggle("Sequence parallel", value=True, key="tp_sp", help="Shard norms / dropout activations over tp too")
pp = c[2].number_input("Pipeline stages", min_value=1, max_value=1024, value=1, step=1, key="tp_pp")
zero = c[3].selectbox("ZeRO stage", [0, 1, 2, 3], index=1, key="tp_zero", help="3 = FSDP full sharding")
c = st.columns(4)
recompute = c[0].selectbox("Recompute", ["none", "selective", "full"], index=1, key="tp_recompute")
micro = c[1].number_input("Micro-batch", min_value=1, max_value=65536, value=1, step=1, key="tp_micro")
global_batch = c[2].number_input("Global batch (sequences)", min_value=1, max_value=1 << 24, value=1024, step=1,
                                 key="tp_global")
mfu = c[3].slider("Assumed MFU", min_value=0.05, max_value=1.0, value=0.4, step=0.01, key="tp_mfu")

layout = {"gpu": gpu, "gpus": int(gpus), "tp": int(tp), "sp": bool(sp), "pp": int(pp), "zero": int(zero),
          "recompute": recompute, "seq_len": int(seq_len), "micro_batch": int(micro),
          "global_batch": int(global_batch), "tokens": float(tokens_b) * 1e9, "mfu": float(mfu)}

with state.shown_errors("the training plan"):
    with st.spinner("Planning..."):
        r = state.cached_training_plan(state.design_json(), json.dumps(layout, sort_keys=True))
    m, t, inf = r["memory"], r["time"], r["inference"]
    for w in r.get("warnings") or []:
        st.caption(f":material/warning: {ui.md(w)}")
    cols = st.columns(4)
    cols[0].metric("Per-GPU memory", ui.fmt_bytes(m["total_bytes"]),
                   delta="fits" if m["fits"] else "does not fit", delta_color="normal" if m["fits"] else "inverse",
                   help=f"of {ui.fmt_bytes(m['capacity_bytes'])} on {r['gpu']['name']}")
    cols[1].metric("Step time", f"{t['step_s']:,.2f} s", help=f"{t['tokens_per_s']:,.0f} tokens/s at MFU {t['mfu']:.0%}")
    cols[2].metric("Time to train", f"{t['time_to_train_days']:,.1f} days", help=f"{t['steps']:,.0f} steps")
    cols[3].metric("GPU-hours", ui.fmt_count(t["gpu_hours"]))
    st.caption(f"dp {r['layout']['dp']} x tp {r['layout']['tp']} x pp {r['layout']['pp']}; pipeline stage {m['stage']} "
               f"holds the most ({m['micro_batches_in_flight']} micro-batch(es) in flight); HFU {t['hfu']:.1%}")

    st.subheader("Per-GPU memory")
    fig = go.Figure()
    for key, (label, color) in TERMS.items():
        if m[key]:
            fig.add_bar(y=["this layout"], x=[m[key]], name=label, orientation="h", marker_color=color,
                        hovertemplate="%{x:.3s}B<extra>" + label + "</extra>")
    fig.add_vline(x=m["capacity_bytes"], line_dash="dash", line_color="#E45756",
                  annotation_text=f"{r['gpu']['name']} capacity")
    fig.update_layout(barmode="stack", height=220, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.4}, xaxis_title="bytes")
    fig.update_xaxes(exponentformat="SI")
    st.plotly_chart(fig, width="stretch", key="tp_memory_bars")
    a = r["activations"]
    st.caption("Activations as built (whole model, one micro-batch, no parallelism): "
               + ", ".join(f"{k} {ui.fmt_bytes(v)}" for k, v in a["as_built_bytes"].items())
               + f". Korthikanti et al. 2022 for this layout: {ui.fmt_bytes(a['korthikanti']['per_layer_bytes'])} per layer.")

    ft = r["fit_table"]
    st.subheader(f"Layouts that fit on {ft['gpus']} GPUs ({ft['fitting']} of {ft['tried']})")
    if ft["rows"]:
        names = [f"tp{row['tp']} pp{row['pp']} Z{row['zero']} {row['recompute']}" for row in ft["rows"]]
        fig = go.Figure()
        fig.add_bar(x=names, y=[row["total_bytes"] - row["activations_bytes"] for row in ft["rows"]],
                    name="weights, gradients, optimizer, overhead", marker_color="#4C78A8")
        fig.add_bar(x=names, y=[row["activations_bytes"] for row in ft["rows"]], name="activations",
                    marker_color="#B279A2")
        fig.add_hline(y=m["capacity_bytes"], line_dash="dash", line_color="#E45756")
        fig.update_layout(barmode="stack", height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                          legend={"orientation": "h", "y": -0.5}, yaxis_title="bytes per GPU")
        fig.update_yaxes(exponentformat="SI")
        st.plotly_chart(fig, width="stretch", key="tp_fit_bars")
        st.dataframe(pd.DataFrame([{**row, "total": ui.fmt_bytes(row["total_bytes"]),
                                    "headroom": ui.fmt_bytes(row["headroom_bytes"])} for row in ft["rows"]])
                     [["tp", "pp", "dp", "sp", "zero", "recompute", "total", "headroom"]],
                     hide_index=True, width="stretch", key="tp_fit_table")
    else:
        st.warning("No layout with tp <= 8 fits on these GPUs; add GPUs or shorten the sequence.")

    st.subheader("FLOP conventions")
    st.dataframe(pd.DataFrame([{"convention": k, "FLOPs / token": ui.fmt_count(v["per_token"]),
                                "FLOPs / step": ui.fmt_count(v["per_step"]), "MFU it reports": f"{v['mfu']:.1%}",
                                "source": v["citation"]} for k, v in r["flops"].items()]),
                 hide_index=True, width="stretch", key="tp_conventions")
    st.caption(f"Step time uses `{r['reference_convention']}` at the assumed MFU; the same run read under each "
               "convention gives the MFU in the table.")

    st.subheader("Inference")
    cols = st.columns(3)
    cols[0].metric("Prefill", f"{inf['prefill_s'] * 1e3:,.1f} ms", help=f"{layout['seq_len']} tokens on {inf['replica_gpus']} GPU(s)")
    cols[1].metric("Decode bound (batch 1)", f"{inf['decode_tokens_per_s_bound']:,.1f} tok/s",
                   help=f"bandwidth / {ui.fmt_bytes(inf['decode_bytes_per_token'])} read per token")
    cols[2].metric("Largest batch at this length",
                   "no KV limit" if inf["max_batch_at_seq_len"] is None else f"{inf['max_batch_at_seq_len']:,}")
