"""Probe: does the design learn? Short seeded training runs of one or several designs on one task.

The backend (``backend.probe``) adapts each design to the task (same layer
plan, the task's vocabulary and length; width-scaled when large), trains it
with AdamW and reports the loss curve and held-out accuracy; this page picks
designs, runs them one after another with a progress bar, like the smoke
test, and draws every loss curve on one chart.
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend.errors import DesignError
from backend.presets import list_presets

import state
import ui

RESULTS_KEY = "probe_results"  # (settings tuple, [result dict, ...]) of the last probe run
CURRENT = "Current design"
TASK_LABELS = {"mqar": "MQAR (associative recall)", "copy": "Selective copying", "induction": "Induction heads",
               "text": "Character LM (public-domain text)"}

st.title("Probe")
ui.banner()
st.write("Trains each design for a few hundred steps on a synthetic probe (or a tiny text) with AdamW and reports "
         "the loss curve and accuracy on held-out examples. Designs keep their layer plan; they are trained as a "
         "small causal LM for the task, width-scaled when they are large (the result says so).")



def _resolve(choice: str):
    if choice == CURRENT:
        return state.design()
    if choice.startswith("library: "):
        return state.library_design(choice.removeprefix("library: "))
    return state.cached_preset(choice.removeprefix("preset: "))


sources = [CURRENT] + [f"preset: {n}" for n in list_presets()] + [f"library: {n}" for n in state.library_names()]
chosen = st.multiselect("Designs", sources, default=[CURRENT], key="probe_designs")
c1, c2, c3 = st.columns(3)
task = c1.selectbox("Task", list(TASK_LABELS), format_func=TASK_LABELS.get, key="probe_task")
steps = int(c2.number_input("Steps", min_value=10, max_value=20000, value=800, step=100, key="probe_steps"))
seed = int(c3.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, key="probe_seed"))
settings = (tuple(chosen), task, steps, seed, state.design_json())


def run_probes() -> None:
    from backend.probe import run_probe

    n = len(chosen)
    with st.status(f"Probe {task}: starting...", expanded=True) as status:
        bar = st.progress(0.0)
        results = []
        for i, choice in enumerate(chosen):
            def progress(step: str, fraction: float, message: str, i: int = i) -> None:
                bar.progress(min(max((i + fraction) / n, 0.0), 1.0), text=message)
                status.update(label=f"Probe {task}: {message}")

            try:
                design = _resolve(choice)
                results.append(run_probe(design, task=task, steps=steps, seed=seed, progress=progress,
                                         label=choice.removeprefix("preset: ").removeprefix("library: ")).to_dict())
            except DesignError as exc:
                st.error(f"{choice}: {exc}")
            except Exception as exc:  # noqa: BLE001 - never a traceback in the page
                state.log.exception("probe crashed")
                st.error(f"{choice}: the probe crashed ({type(exc).__name__}); details are in the server log.")
        st.session_state[RESULTS_KEY] = (settings, results)
        status.update(label=f"Probe {task}: {len(results)} of {n} design(s) trained", expanded=False,
                      state="complete" if len(results) == n else "error")


if st.button("Run probe", type="primary", icon=":material/play_arrow:", key="probe_run", disabled=not chosen):
    run_probes()

saved = st.session_state.get(RESULTS_KEY)
if saved and saved[1]:
    if saved[0] != settings:
        st.caption("The selection or the design changed since this run; run the probe again to update it.")
    results = saved[1]
    fig = go.Figure()
    for r in results:
        fig.add_trace(go.Scatter(x=list(range(1, len(r["losses"]) + 1)), y=r["losses"], mode="lines", name=r["name"]))
    fig.update_layout(xaxis_title="step", yaxis_title="training loss", height=380, margin=dict(t=30, b=40),
                      legend=dict(orientation="h"))
    st.plotly_chart(fig, key="probe_chart")
    df = pd.DataFrame([{
        "design": r["name"], "parameters": r["params"], "held-out accuracy": r["final_accuracy"],
        "chance": r["chance_accuracy"], "final loss": r["final_loss"], "tokens/s": round(r["tokens_per_s"]),
        "seconds": round(r["wall_s"], 1), "scaled": "yes" if r["scaled"] else "no"} for r in results])
    st.dataframe(df, hide_index=True, width="stretch",
                 column_config={"held-out accuracy": st.column_config.NumberColumn(format="percent"),
                                "chance": st.column_config.NumberColumn(format="percent")})
    for r in results:
        for note in r["notes"]:
            st.caption(f"{r['name']}: {note}")
