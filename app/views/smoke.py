"""Smoke test: real weights, forward + backward, shape / finiteness / gradient / causality / KV-cache checks.

The backend estimates memory before allocating anything and refuses an
oversize design (SmokeRefused) with a width-scaled alternative; runs wait in a
server-wide queue (at most ``BACKEND_SMOKE_CONCURRENCY`` at once), each in its
own child process (its own memory, killed when the session ends), so smoke
tests cannot take the server down.
"""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from backend.errors import DesignError

import state
import ui

st.title("Smoke test")
ui.banner()
design = state.design()
djson = state.design_json()

st.write("Builds the model with real weights (batch 2, up to 32 tokens, float32 on CPU), runs forward and backward, "
         "and checks output shapes, finite values, that every parameter gets a gradient, causality, and that "
         "KV-cached decoding matches the full forward pass.")


@st.cache_resource
def smoke_queue():
    """The one queue of this server (shared by every session: it holds no user data)."""
    from backend.analysis.smoke_service import SmokeQueue

    return SmokeQueue()


def run_smoke(scaled: bool) -> None:
    from backend.analysis.smoke_service import run_budget_bytes, run_smoke_process

    queue = smoke_queue()
    label = "Smoke test (width-scaled copy)" if scaled else "Smoke test"
    with st.status(f"{label}: waiting for a free slot...", expanded=True) as status:
        bar = st.progress(0.0)
        lines = st.empty()
        log: list[str] = []

        def waiting(ahead: int) -> None:  # Streamlit raises here when the session ends: we leave the queue
            status.update(label=f"{label}: queued, {ahead} run{'s' if ahead != 1 else ''} ahead "
                                f"(at most {queue.max_running} at once on this server)")

        done = {"fraction": 0.0, "message": "starting"}

        def progress(step: str, fraction: float, message: str) -> None:
            done.update(fraction=min(max(float(fraction), 0.0), 1.0), message=message)
            bar.progress(done["fraction"], text=message)
            log.append(message)
            lines.text("\n".join(log[-8:]))
            status.update(label=f"{label}: {message}")

        def tick() -> None:  # an st call: where Streamlit stops this run (and so kills the child) when the session ends
            bar.progress(done["fraction"], text=done["message"])

        try:
            with queue.slot(waiting):
                status.update(label=f"{label}: starting...")
                outcome = run_smoke_process(json.loads(djson), scaled=scaled, budget_bytes=run_budget_bytes(queue.max_running),
                                            progress=progress, tick=tick)
        except DesignError as exc:
            status.update(label="The design cannot be smoke-tested", state="error")
            st.error(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - never a traceback in the page
            # (Streamlit's stop / rerun are BaseExceptions: they pass, and the finally blocks kill the child)
            state.log.exception("smoke test crashed")
            status.update(label="The smoke test crashed", state="error")
            st.error(f"The smoke test crashed ({type(exc).__name__}); details are in the server log.")
            return
        if "refused" in outcome:
            info = outcome["refused"]
            status.update(label="Refused: the real model would not fit in memory", state="error")
            st.session_state[state.SMOKE_REFUSAL_KEY] = (djson, {
                "message": info["message"], "estimate_bytes": info["estimate_bytes"], "budget_bytes": info["budget_bytes"],
                "scaled_design": info.get("scaled_design"), "scaled_estimate_bytes": info.get("scaled_estimate_bytes")})
            st.session_state[state.SMOKE_RESULT_KEY] = None
            return
        result = outcome["result"]
        st.session_state[state.SMOKE_REFUSAL_KEY] = None
        st.session_state[state.SMOKE_RESULT_KEY] = (djson, result)
        status.update(label=f"{label}: {'passed' if result['passed'] else 'FAILED'} in {result['seconds']:.2f} s",
                      state="complete" if result["passed"] else "error", expanded=False)


c1, c2 = st.columns([1, 3])
if c1.button("Run smoke test", type="primary", icon=":material/play_arrow:", key="smoke_run"):
    run_smoke(scaled=False)
c2.caption("Large designs are refused before any allocation; you can then smoke-test a width-scaled copy with the "
           "same layer plan.")

refusal = st.session_state.get(state.SMOKE_REFUSAL_KEY)
if refusal and refusal[0] == djson:
    info = refusal[1]
    st.warning(f"**Refused** — {info['message']}")
    cols = st.columns(3)
    cols[0].metric("Estimated need", ui.fmt_bytes(info["estimate_bytes"]))
    cols[1].metric("Budget", ui.fmt_bytes(info["budget_bytes"]))
    if info.get("scaled_design"):
        cols[2].metric("Scaled copy needs", ui.fmt_bytes(info["scaled_estimate_bytes"] or 0))
        sd = info["scaled_design"]
        st.caption(f"Scaled copy: hidden_size {sd.get('hidden_size')}, n_heads {sd.get('n_heads')}, same layer kinds, "
                   "order, repetition and flow.")
        if st.button("Run the scaled smoke test", icon=":material/compress:", key="smoke_scaled"):
            run_smoke(scaled=True)

res = st.session_state.get(state.SMOKE_RESULT_KEY)
if res and res[0] == djson:
    r = res[1]
    if r["passed"]:
        st.success(f"**Passed**{' (width-scaled copy)' if r['scaled'] else ''} — {r['params']:,} parameters, "
                   f"{r['seconds']:.2f} s, peak memory +{ui.fmt_bytes(r['peak_memory_bytes'])} "
                   f"(estimate {ui.fmt_bytes(r['estimate_bytes'])}).")
    else:
        failed = ", ".join(c["name"] for c in r["checks"] if not c["passed"])
        st.error(f"**Failed**: {failed}")
    df = pd.DataFrame([{"check": c["name"], "result": "– n/a" if not c.get("applicable", True) else "✓ pass" if c["passed"] else "✗ FAIL",
                        "ms": round(c["seconds"] * 1000, 1), "detail": c["detail"]} for c in r["checks"]])
    st.dataframe(df, hide_index=True, width="stretch",
                 column_config={"ms": st.column_config.ProgressColumn("time (ms)", format="%.1f", min_value=0,
                                                                      max_value=max(df["ms"].max(), 1.0))})
    for w in r.get("warnings") or []:
        st.caption(f":material/warning: {w}")
elif res:
    st.caption("The design changed since the last smoke test; run it again.")
