"""Compare two designs: headline numbers and per-layer plans side by side, differences marked."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from backend.errors import DesignError
from backend.presets import list_presets
from backend.spec import Design, load_design, parse_design_text

import state
import ui
from text import md

st.title("Compare")
ui.banner()

CURRENT, PREVIOUS, UPLOADED = "Current design", "Before the last edit", "Uploaded file"
sources = [CURRENT]
if st.session_state.get(state.PREVIOUS_KEY):
    sources.append(PREVIOUS)
if st.session_state.get(state.UPLOADED_KEY):
    sources.append(UPLOADED)
sources += [f"preset: {n}" for n in list_presets()]



sources += [f"library: {n}" for n in state.library_names()]

with st.expander("Upload a design to compare", expanded=False):
    up = st.file_uploader("JSON or YAML", type=["json", "yaml", "yml"], key="compare_upload")
    if up is not None:
        try:
            d = parse_design_text(up.getvalue(), "json" if up.name.lower().endswith(".json") else "yaml", source=up.name)
            state.validate(d)
        except DesignError as exc:
            st.error(f"**{md(up.name)}** is not a valid design — {md(exc)}")
        else:
            if st.session_state.get(state.UPLOADED_KEY) != state.canonical(d):
                st.session_state[state.UPLOADED_KEY] = state.canonical(d)
                st.rerun()
            st.success(f"{md(up.name)}: {md(d.name)} is available as “{UPLOADED}”.")


def resolve(choice: str) -> Design:
    if choice == CURRENT:
        return state.design()
    if choice == PREVIOUS:
        return load_design(json.loads(st.session_state[state.PREVIOUS_KEY]))
    if choice == UPLOADED:
        return load_design(json.loads(st.session_state[state.UPLOADED_KEY]))
    if choice.startswith("library: "):
        return state.library_design(choice.removeprefix("library: "))  # latest revision
    return state.cached_preset(choice.removeprefix("preset: "))


c1, c2 = st.columns(2)
a_choice = c1.selectbox("Design A", sources, index=0, key="compare_a")
b_default = sources.index(PREVIOUS) if PREVIOUS in sources else min(1, len(sources) - 1)
b_choice = c2.selectbox("Design B", sources, index=b_default, key="compare_b")

with state.shown_errors("the comparison"):
    da, db = resolve(a_choice), resolve(b_choice)
    ja, jb = state.canonical(da), state.canonical(db)
    with st.spinner("Analysing both designs..."):
        ra, rb = state.cached_analysis(ja), state.cached_analysis(jb)
    if ja == jb:
        st.info("The two designs are identical.")

    rows: list[tuple[str, Any, Any, Any]] = [
        ("name", da.name, db.name, str),
        ("architecture / task", f"{da.architecture} / {da.task}", f"{db.architecture} / {db.task}", str),
        ("hidden size", da.hidden_size, db.hidden_size, str),
        ("heads (kv)", f"{da.n_heads} ({da.kv_heads})", f"{db.n_heads} ({db.kv_heads})", str),
        ("executed layers", ra["executed_layers"], rb["executed_layers"], str),
        ("unique layers", ra["unique_layers"], rb["unique_layers"], str),
        ("parameters", ra["params"]["total"], rb["params"]["total"], ui.fmt_count),
        ("params executed", ra["params"]["executed"], rb["params"]["executed"], ui.fmt_count),
        ("embedding params", ra["params"]["embedding"], rb["params"]["embedding"], ui.fmt_count),
        ("non-embedding params", ra["params"]["non_embedding"], rb["params"]["non_embedding"], ui.fmt_count),
        (f"forward FLOPs (own max_seq_len)", ra["flops"]["forward"], rb["flops"]["forward"], ui.fmt_count),
        ("forward FLOPs causal-aware", ra["flops"]["forward_causal"], rb["flops"]["forward_causal"], ui.fmt_count),
        ("training FLOPs", ra["flops"]["training"], rb["flops"]["training"], ui.fmt_count),
        ("KV cache / token", ra["memory"]["kv_cache_bytes_per_token"], rb["memory"]["kv_cache_bytes_per_token"], ui.fmt_bytes),
        ("decoding state (constant)", ui.state_bytes(ra), ui.state_bytes(rb), ui.fmt_bytes),
        ("weights (bf16)", ra["memory"]["weights_bytes"], rb["memory"]["weights_bytes"], ui.fmt_bytes),
        ("training memory (Adam)", ra["memory"]["training"]["total_bytes"], rb["memory"]["training"]["total_bytes"], ui.fmt_bytes),
    ]
    table = pd.DataFrame([{"": "≠" if a != b else "", "metric": k, "A": fmt(a), "B": fmt(b)} for k, a, b, fmt in rows])

    def _mark(row: pd.Series) -> list[str]:
        return ["background-color: #FFF3CD" if row[""] else ""] * len(row)

    st.subheader("Numbers")
    st.dataframe(table.style.apply(_mark, axis=1), hide_index=True, width="stretch", height=38 + 35 * len(table))

    st.subheader("Training plan")
    if st.toggle("Compare training plans", value=False, key="compare_training",
                 help="Per-GPU memory, fit and time of both designs on the same cluster and layout"):
        from backend.training.hardware import GPUS

        c = st.columns(5)
        gpu = c[0].selectbox("GPU", list(GPUS), format_func=lambda k: GPUS[k].name, key="compare_gpu")
        gpus = c[1].number_input("GPUs", min_value=1, max_value=1 << 20, value=8, step=1, key="compare_gpus")
        tp = c[2].selectbox("Tensor parallel", [1, 2, 4, 8], key="compare_tp")
        zero = c[3].selectbox("ZeRO", [0, 1, 2, 3], index=1, key="compare_zero")
        seq = c[4].number_input("Sequence length", min_value=1, max_value=1 << 22,
                                value=min(da.max_seq_len, db.max_seq_len), step=1, key="compare_seq")
        layout = json.dumps({"gpu": gpu, "gpus": int(gpus), "tp": int(tp), "sp": tp > 1, "zero": int(zero),
                             "seq_len": int(seq), "global_batch": int(gpus) * 8, "fit_table": True}, sort_keys=True)
        with st.spinner("Planning both designs..."):
            pa, pb = state.cached_training_plan(ja, layout), state.cached_training_plan(jb, layout)

        def _first_fit(p: dict[str, Any]) -> str:
            rows = p["fit_table"]["rows"]
            if not rows:
                return "none"
            r0 = rows[0]
            return f"tp {r0['tp']} pp {r0['pp']} ZeRO-{r0['zero']} {r0['recompute']}"

        trows: list[tuple[str, Any, Any, Any]] = [
            ("per-GPU memory", pa["memory"]["total_bytes"], pb["memory"]["total_bytes"], ui.fmt_bytes),
            ("activations per GPU", pa["memory"]["activations_bytes"], pb["memory"]["activations_bytes"], ui.fmt_bytes),
            ("fits", pa["memory"]["fits"], pb["memory"]["fits"], lambda v: "yes" if v else "no"),
            ("FLOPs / token (causal-aware)", pa["flops"]["exact_causal"]["per_token"], pb["flops"]["exact_causal"]["per_token"], ui.fmt_count),
            ("step time (s)", pa["time"]["step_s"], pb["time"]["step_s"], lambda v: f"{v:,.2f}"),
            ("days for 1T tokens", pa["time"]["time_to_train_days"], pb["time"]["time_to_train_days"], lambda v: f"{v:,.1f}"),
            ("GPU-hours", pa["time"]["gpu_hours"], pb["time"]["gpu_hours"], ui.fmt_count),
            ("least-sharded layout that fits", _first_fit(pa), _first_fit(pb), str),
        ]
        tt = pd.DataFrame([{"": "≠" if a != b else "", "metric": k, "A": fmt(a), "B": fmt(b)} for k, a, b, fmt in trows])
        st.dataframe(tt.style.apply(_mark, axis=1), hide_index=True, width="stretch", key="compare_training_table")
        st.caption("Micro-batch 1, global batch 8 sequences per GPU, selective recompute, MFU 40 %; "
                   "the Training plan page sets every knob.")

    st.subheader("Per-layer plans")
    la = {(e["stack"], e["index"]): e for e in ra["layers"]}
    lb = {(e["stack"], e["index"]): e for e in rb["layers"]}
    keys = sorted(set(la) | set(lb), key=lambda k: ({"encoder": 0, "layers": 1, "decoder": 2}.get(k[0], 3), k[1]))

    def _desc(e: dict[str, Any] | None) -> str:
        return "—" if e is None else f"{e['attention']} / {e['mlp']} / {e['norm']}" + (f"  (u{e['unique_index']})" if e["unique_index"] != e["index"] else "")

    plan_rows = []
    for k in keys:
        ea, eb = la.get(k), lb.get(k)
        differs = ea is None or eb is None or (ea["attention"], ea["mlp"], ea["norm"]) != (eb["attention"], eb["mlp"], eb["norm"])
        plan_rows.append({"": "≠" if differs else "", "stack": k[0], "layer": k[1], "A: attention / mlp / norm": _desc(ea),
                          "B: attention / mlp / norm": _desc(eb),
                          "A params": ui.fmt_count(ea["params"]) if ea else "—", "B params": ui.fmt_count(eb["params"]) if eb else "—"})
    pdf = pd.DataFrame(plan_rows)
    if len({k[0] for k in keys}) == 1:
        pdf = pdf.drop(columns=["stack"])
    n_diff = int((pdf[""] == "≠").sum())
    st.caption(f"{n_diff} of {len(pdf)} executed layers differ in kind (highlighted).")
    st.dataframe(pdf.style.apply(_mark, axis=1), hide_index=True, width="stretch", height=min(38 + 35 * len(pdf), 600))
