"""Designer (landing page): paint the layer grid, edit the stack, see the numbers."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st
import yaml

from backend.errors import DesignError
from backend.plan import PATTERNS, to_string
from backend.registry import ATTENTION, MLP, NORM, REGISTRIES, role

import edits
import grid
import state
import ui

CATEGORY_LABELS = {"attention": "Attention", "mlp": "MLP", "norm": "Norm"}
MODEL_NORM = "(model norm)"
UNCHANGED = "(unchanged)"

design = state.design()
djson = state.design_json()
plan = state.plan()
stacks = design.stacks()

st.title("Designer")
ui.banner()
ui.headline(djson)
for w in plan.warnings:
    st.caption(f":material/warning: {w}")

# ---- the grid + brush ---------------------------------------------------------------


def _paint(selection: dict[str, list[int]], category: str, kind: str, params: dict[str, Any]) -> None:
    if not any(selection.values()):
        st.session_state[state.ERROR_KEY] = "paint: select layers on the grid first (drag a box, or type indices)"
        return
    ok = True
    for stack_name, executed in selection.items():
        if not executed:
            continue
        sp = state.plan().stacks[stack_name]
        unique = sorted({sp.executed[j].unique_index for j in executed})
        ok &= state.apply(lambda d, s=stack_name, u=unique: edits.paint(d, s, u, category, kind, params), "paint")
    if ok:
        st.session_state[state.GRID_VERSION_KEY] += 1
        st.session_state[state.NOTICE_KEY] = None


selection: dict[str, list[int]] = {}
gv = st.session_state[state.GRID_VERSION_KEY]
shared_any = False
for name, sp in plan.stacks.items():
    if len(plan.stacks) > 1:
        st.subheader(f"{name} — {sp.depth} executed layers ({sp.n_unique} unique)")
    fig = grid.grid_figure(sp)
    # keyed by the design version too: a selection never outlives the layers it was made on
    event = st.plotly_chart(fig, key=f"grid_{name}_{gv}_{st.session_state[state.VERSION_KEY]}", on_select="rerun", selection_mode=("points", "box", "lasso"),
                            config={"displayModeBar": True, "displaylogo": False,
                                    "modeBarButtonsToRemove": ["zoom2d", "pan2d", "zoomIn2d", "zoomOut2d", "autoScale2d"]})
    selection[name] = [j for j in grid.selected_executed(event) if j < sp.depth]
    shared_any |= sp.depth != sp.n_unique

with st.container(border=True):
    cols = st.columns([2, 2, 5, 2])
    with cols[0]:
        category = st.radio("Brush row", list(CATEGORY_LABELS), format_func=CATEGORY_LABELS.get, key="brush_category",
                            horizontal=False)
    reg = REGISTRIES[category]
    with cols[1]:
        kind = st.selectbox("Kind", list(reg), key=f"brush_kind_{category}",
                            help="\n\n".join(f"**{k}**: {v.description}" for k, v in reg.items()))
        typed = ""
        typed_stack = next(iter(plan.stacks))
        if not any(selection.values()):
            typed = st.text_input("…or executed layers", key="brush_indices", placeholder="e.g. 0-3, 8",
                                  help="Used when nothing is selected on the grid")
            if len(plan.stacks) > 1:
                typed_stack = st.selectbox("of stack", list(plan.stacks), key="brush_indices_stack")
    with cols[2]:
        st.caption(f"**{kind}** — {reg[kind].description}" + (f"  \n_{reg[kind].paper}_" if reg[kind].paper else ""))
        pcols = st.columns(3)
        params: dict[str, Any] = {}
        info = reg[kind]
        for i, (pname, p) in enumerate(info.params.items()):
            with pcols[i % 3]:
                v = ui.param_widget(pname, p, p.default, f"brush_param.{category}.{kind}.{pname}")
                if v != p.default:
                    params[pname] = v
    with cols[3]:
        if typed.strip():
            try:
                selection[typed_stack] = edits.parse_indices(typed, plan.stacks[typed_stack].depth)
            except ValueError as exc:
                st.error(str(exc))
        n_sel = sum(len(v) for v in selection.values())
        uniq = sum(len({plan.stacks[s].executed[j].unique_index for j in v}) for s, v in selection.items())
        st.write(f"**{n_sel}** executed layer{'s' if n_sel != 1 else ''} selected"
                 + (f" → **{uniq}** unique" if shared_any and n_sel else ""))
        st.button("Paint selection", icon=":material/format_paint:", type="primary", on_click=_paint, args=(selection, category, kind, params),
                  disabled=n_sel == 0, key="paint", width="stretch")
    if shared_any:
        st.caption("Faded cells re-execute a shared layer (`u3` under the column = unique layer 3). Painting any "
                   "execution of a shared layer paints its unique layer, so every execution changes.")
    else:
        st.caption("Drag a box over the grid (or click cells, shift-click to add) to select layers, then paint.")

# ---- editors --------------------------------------------------------------------------

stack_names = list(stacks)
if len(stack_names) > 1:
    edit_stack = st.segmented_control("Edit stack", stack_names, default=stack_names[-1], key="edit_stack") or stack_names[-1]
else:
    edit_stack = stack_names[0]
stack = stacks[edit_stack]
sp = plan.stacks[edit_stack]

# Only the chosen editor renders (tabs would build every panel's widgets on every rerun).
PANELS = ["Layer table", "Pattern / string", "Rules", "Stack, repetition & flow", "Model settings", "YAML"]
panel = st.segmented_control("Editor", PANELS, default=PANELS[0], key="editor_panel", label_visibility="collapsed") \
    or PANELS[0]
tab_table, tab_layout, tab_rules, tab_rep, tab_model, tab_yaml = (st.container() if panel == p else None for p in PANELS)

# -- layer table (unique layers), in sync with the grid
if tab_table is not None:
    with tab_table:
        rows, where = [], []
        for name, spx in plan.stacks.items():
            runs: dict[int, list[int]] = {}
            for layer in spx.executed:
                runs.setdefault(layer.unique_index, []).append(layer.index)
            for layer in spx.unique:
                rows.append({
                    "stack": name, "layer": layer.unique_index,
                    "executed as": ", ".join(map(str, runs.get(layer.unique_index, []))),
                    "attention": layer.attention, "mlp": layer.mlp, "norm": layer.norm,
                    "overrides": json.dumps(layer.params, separators=(", ", ": ")) if layer.params else "",
                })
                where.append((name, layer.unique_index))
        df = pd.DataFrame(rows)
        if len(plan.stacks) == 1:
            df = df.drop(columns=["stack"])
        table_key = f"layer_table_{st.session_state[state.TABLE_VERSION_KEY]}_{st.session_state[state.VERSION_KEY]}"

        def _table_changed(key: str, where: list[tuple[str, int]]) -> None:
            edited = (st.session_state.get(key) or {}).get("edited_rows") or {}
            for row, changes in sorted(edited.items(), key=lambda kv: int(kv[0])):
                stack_name, u = where[int(row)]
                for col, value in changes.items():
                    if col in edits.CATEGORIES and value:
                        state.apply(lambda d, s=stack_name, u=u, c=col, v=value: edits.paint(d, s, [u], c, v), f"layer table row {row}")
            st.session_state[state.TABLE_VERSION_KEY] += 1

        st.data_editor(
            df, key=table_key, hide_index=True, width="stretch", num_rows="fixed",
            disabled=[c for c in df.columns if c not in edits.CATEGORIES],
            column_config={
                "attention": st.column_config.SelectboxColumn("attention", options=list(ATTENTION), required=True),
                "mlp": st.column_config.SelectboxColumn("mlp", options=list(MLP), required=True),
                "norm": st.column_config.SelectboxColumn("norm", options=list(NORM), required=True),
                "layer": st.column_config.NumberColumn("unique layer", format="%d"),
            },
            on_change=_table_changed, args=(table_key, where), height=min(38 + 35 * len(df), 420),
        )
        st.caption("One row per unique layer (a shared layer is one row however often it runs). A change becomes a "
                   "`layer_idx` rule (or edits the explicit list), exactly like painting.")

    # -- pattern / string / explicit
if tab_layout is not None:
    with tab_layout:
        current_mode = "pattern" if stack.pattern is not None else "string" if stack.string is not None else \
            "explicit" if stack.explicit is not None else "rules"
        modes = {"rules": "Defaults + rules only", "pattern": "Named pattern", "string": "String notation",
                 "explicit": "Explicit list"}
        mode = st.radio("Describe the layers by", list(modes), format_func=modes.get, index=list(modes).index(current_mode),
                        horizontal=True, key=state.key(f"layout_mode_{edit_stack}"))
        st.caption(f"Current plan as a string: `{to_string([(l.attention, l.mlp) for l in sp.unique], stack.mlp)}`")
        if mode == "rules":
            if current_mode != "rules" and st.button("Use defaults + rules only", key="layout_rules"):
                state.apply(lambda d: edits.set_layout(d, edit_stack, "rules", None), "layout")
                st.rerun()
            st.caption("Every layer starts from the stack defaults; the Rules panel changes it.")
        elif mode == "string":
            def _string_changed(k: str) -> None:
                text = st.session_state.get(k, "")
                state.apply(lambda d: edits.set_layout(d, edit_stack, "string", text), f"{edit_stack}.string")

            skey = state.key(f"string_{edit_stack}")
            default_text = stack.string if stack.string is not None else \
                to_string([(l.attention, l.mlp) for l in sp.unique], stack.mlp)
            st.text_input("String notation", value=default_text, key=skey, on_change=_string_changed, args=(skey,),
                          help="Comma-separated kinds, `*N` repeats, `:MLP` sets the MLP: `SPECTRAL,SDPA*3,TOKEN_PARAM`, "
                               "`SDPA:MOE*2`. Counts must add up to a divisor of n_layers (the string is tiled).")
            err = state.error()
            if err and ".string" in err:
                st.error(err)
            if stack.string is None and st.button("Apply this string", key="apply_string"):
                _string_changed(skey)
                st.rerun()
        elif mode == "pattern":
            names = list(PATTERNS)
            cur_name = (stack.pattern if isinstance(stack.pattern, str) else stack.pattern.name) if stack.pattern else names[0]
            cur_params = {} if stack.pattern is None or isinstance(stack.pattern, str) else dict(stack.pattern.params)
            pname = st.selectbox("Pattern", names, index=names.index(cur_name) if cur_name in names else 0,
                                 key=state.key(f"pattern_name_{edit_stack}"))
            st.caption(PATTERNS[pname].description)
            with st.form(state.key(f"pattern_form_{edit_stack}")):
                values: dict[str, Any] = {}
                pcols = st.columns(3)
                for i, (k, help_) in enumerate(PATTERNS[pname].params.items()):
                    with pcols[i % 3]:
                        cur = cur_params.get(k) if pname == cur_name else None
                        if k in ("kinds",):
                            v = st.multiselect(k, list(ATTENTION), default=cur or [], help=help_ + " (order = selection order)")
                            values[k] = v or None
                        elif k in ("mlps",):
                            v = st.multiselect(k, list(MLP), default=cur or [], help=help_)
                            values[k] = v or None
                        elif k in ("attention", "outer", "inner", "special", "base"):
                            opts = [ui.DEFAULT_LABEL] + list(ATTENTION)
                            v = st.selectbox(k, opts, index=opts.index(cur) if cur in opts else 0, help=help_)
                            values[k] = None if v == ui.DEFAULT_LABEL else v
                        elif k == "mlp":
                            opts = [ui.DEFAULT_LABEL] + list(MLP)
                            v = st.selectbox(k, opts, index=opts.index(cur) if cur in opts else 0, help=help_)
                            values[k] = None if v == ui.DEFAULT_LABEL else v
                        elif k in ("period", "n_outer", "every", "offset"):
                            values[k] = st.number_input(k, min_value=0, value=cur, step=1, help=help_, placeholder="default")
                        else:
                            text = st.text_input(k + " (YAML)", value="" if cur is None else json.dumps(cur), help=help_)
                            values[k] = yaml.safe_load(text) if text.strip() else None
                if st.form_submit_button("Apply pattern", type="primary"):
                    p = {k: v for k, v in values.items() if v is not None}
                    ref = {"name": pname, "params": p} if p else pname
                    state.apply(lambda d: edits.set_layout(d, edit_stack, "pattern", ref), f"{edit_stack}.pattern")
                    st.rerun()
        else:
            if stack.explicit is None:
                st.write("Freeze the current plan (pattern / string / rules resolved) into an explicit per-layer list.")
            else:
                st.write(f"The stack is an explicit list of {len(stack.explicit)} entries; painting and the table edit it.")
            if st.button("Bake current plan into an explicit list", key="bake", disabled=stack.explicit is not None and not stack.rules):
                state.apply(lambda d: edits.bake_explicit(d, edit_stack, list(sp.unique)), "bake explicit")
                st.rerun()

    # -- rules editor
if tab_rules is not None:
    with tab_rules:
        rules = stack.rules
        st.caption("Rules apply in order over unique-layer indices; a later rule overrides only the fields it sets. "
                   "`when` keys must all hold.")
        WHEN_KEYS = ("every", "offset", "position", "range", "fraction", "layer_idx")
        for i, rule in enumerate(rules):
            when = {k: v for k, v in rule.when.model_dump(mode="json").items() if v is not None and not (k == "offset" and v == 0)}
            sets = ", ".join(f"{c}={getattr(rule, c)}" for c in edits.CATEGORIES if getattr(rule, c)) or "params only"
            with st.expander(f"#{i}  when {json.dumps(when) if when else '(every layer)'} → {sets}", expanded=False):
                bc = st.columns([1, 1, 1, 6])
                bc[0].button("↑", key=state.key(f"rule_up_{edit_stack}_{i}"), disabled=i == 0,
                             on_click=lambda i=i: state.apply(lambda d: edits.move_rule(d, edit_stack, i, -1), "move rule"))
                bc[1].button("↓", key=state.key(f"rule_down_{edit_stack}_{i}"), disabled=i == len(rules) - 1,
                             on_click=lambda i=i: state.apply(lambda d: edits.move_rule(d, edit_stack, i, 1), "move rule"))
                bc[2].button("✕", key=state.key(f"rule_del_{edit_stack}_{i}"), help="Remove this rule",
                             on_click=lambda i=i: state.apply(lambda d: edits.remove_rule(d, edit_stack, i), "remove rule"))
                with st.form(state.key(f"rule_form_{edit_stack}_{i}")):
                    wc = st.columns(6)
                    every = wc[0].number_input("every", min_value=1, value=rule.when.every, step=1, placeholder="—")
                    offset = wc[1].number_input("offset", min_value=0, value=rule.when.offset, step=1)
                    pos_opts = ["—", "first", "last", "middle"]
                    position = wc[2].selectbox("position", pos_opts, index=pos_opts.index(rule.when.position or "—"))
                    rng = wc[3].text_input("range [a, b)", value="" if rule.when.range is None else f"{rule.when.range[0]}, {rule.when.range[1]}")
                    frac = wc[4].text_input("fraction [a, b)", value="" if rule.when.fraction is None else f"{rule.when.fraction[0]}, {rule.when.fraction[1]}")
                    idx = wc[5].text_input("layer_idx", value="" if rule.when.layer_idx is None else ", ".join(map(str, rule.when.layer_idx)))
                    kc = st.columns(3)
                    picks = {}
                    for c, col in zip(edits.CATEGORIES, kc):
                        opts = [UNCHANGED] + list(REGISTRIES[c])
                        cur = getattr(rule, c)
                        picks[c] = col.selectbox(c, opts, index=opts.index(cur) if cur in opts else 0)
                    params_text = st.text_input("params (YAML mapping: {attention: {...}, mlp: {...}})",
                                                value=json.dumps({k: v for k, v in rule.params.model_dump().items() if v}) if any(
                                                    rule.params.model_dump().values()) else "")
                    if st.form_submit_button("Update rule"):
                        def _nums(text: str, cast) -> list | None:
                            return [cast(x) for x in text.replace("[", "").replace("]", "").split(",") if x.strip()] or None
                        try:
                            new_when: dict[str, Any] = {"every": every, "offset": offset if every else 0,
                                                        "position": None if position == "—" else position,
                                                        "range": _nums(rng, int), "fraction": _nums(frac, float),
                                                        "layer_idx": _nums(idx, int)}
                            new_rule = {"when": {k: v for k, v in new_when.items() if v is not None},
                                        **{c: (None if v == UNCHANGED else v) for c, v in picks.items()},
                                        "params": yaml.safe_load(params_text) if params_text.strip() else {}}
                        except (ValueError, yaml.YAMLError) as exc:
                            st.session_state[state.ERROR_KEY] = f"{edit_stack}.rules[{i}]: {exc}"
                        else:
                            state.apply(lambda d: edits.replace_rule(d, edit_stack, i, new_rule), "update rule")
                        st.rerun()
        ac = st.columns([2, 2, 2, 4])
        new_every = ac[0].number_input("New rule: every", min_value=1, value=2, step=1, key="new_rule_every")
        new_kind = ac[1].selectbox("attention", list(ATTENTION), index=list(ATTENTION).index(role("attention", "cheap")), key="new_rule_kind")
        ac[2].write("")
        ac[2].button("Add rule", icon=":material/add:", key=state.key(f"add_rule_{edit_stack}"),
                     on_click=lambda: state.apply(lambda d: edits.add_rule(d, edit_stack, {"when": {"every": int(new_every)},
                                                                                         "attention": new_kind}), "add rule"))

    # -- stack settings, repetition and flow
if tab_rep is not None:
    with tab_rep:
        with st.form(state.key(f"stack_form_{edit_stack}")):
            st.markdown(f"**Stack `{edit_stack}`**")
            c = st.columns(4)
            n_layers = c[0].number_input("n_layers (unique)", min_value=1, max_value=1024, value=stack.n_layers, step=1)
            att = c[1].selectbox("default attention", list(ATTENTION), index=list(ATTENTION).index(stack.attention))
            mlp = c[2].selectbox("default MLP", list(MLP), index=list(MLP).index(stack.mlp))
            norm_opts = [MODEL_NORM] + list(NORM)
            norm = c[3].selectbox("default norm", norm_opts, index=norm_opts.index(stack.norm) if stack.norm else 0)
            sparams = st.text_input("stack params (YAML, defaults for every layer, e.g. {mlp: {num_experts: 8}})",
                                    value=json.dumps({k: v for k, v in stack.params.model_dump().items() if v}))
            st.markdown("**Repetition (weight sharing)** — n_layers counts unique layers; executed depth follows the mode")
            r = st.columns(4)
            rep_modes = ["none", "cycle", "layerwise", "grouped"]
            rmode = r[0].selectbox("mode", rep_modes, index=rep_modes.index(stack.repeat.mode),
                                   help="cycle: l1 l2 l1 l2 …; layerwise: l1 l1 l2 l2 …; grouped: groups of consecutive layers, each repeated")
            factor = r[1].number_input("factor", min_value=1, max_value=1024, value=stack.repeat.factor, step=1)
            groups = r[2].text_input("groups (sizes)", value=", ".join(map(str, stack.repeat.groups or [])))
            gfactors = r[3].text_input("group factors", value=", ".join(map(str, stack.repeat.group_factors or [])))
            st.markdown("**Flow speed** — `x = x + s · f(norm(x))`")
            f = st.columns(4)
            flow_modes = ["none", "constant", "learned", "predicted"]
            fmode = f[0].selectbox("flow mode", flow_modes, index=flow_modes.index(stack.flow.mode))
            per_layer = f[1].checkbox("per executed layer", value=stack.flow.per_layer)
            fvalue = f[2].number_input("value (constant / initial)", value=float(stack.flow.value), format="%g")
            fhidden = f[3].number_input("predictor hidden", min_value=1, max_value=4096, value=stack.flow.hidden, step=1)
            if st.form_submit_button("Apply stack settings", type="primary"):
                def _stack_edit(d: dict[str, Any]) -> dict[str, Any]:
                    s = d[edit_stack]
                    s["n_layers"] = int(n_layers)
                    if s.get("explicit") is not None and len(s["explicit"]) != n_layers:
                        ex = s["explicit"]
                        s["explicit"] = (ex + [dict(ex[-1])] * n_layers)[:n_layers]
                    s["attention"], s["mlp"] = att, mlp
                    s["norm"] = None if norm == MODEL_NORM else norm
                    s["params"] = yaml.safe_load(sparams) if sparams.strip() else {}
                    ints = lambda t: [int(x) for x in t.split(",") if x.strip()] or None  # noqa: E731
                    rep = {"mode": rmode, "factor": int(factor) if rmode in ("cycle", "layerwise") else 1}
                    if rmode == "grouped":
                        rep["groups"], rep["group_factors"] = ints(groups), ints(gfactors)
                    s["repeat"] = rep
                    s["flow"] = {"mode": fmode, "per_layer": per_layer, "value": float(fvalue), "hidden": int(fhidden)}
                    return d
                state.apply(_stack_edit, f"{edit_stack} settings")
                st.rerun()

    # -- model-level settings, generated from the Design's JSON schema
if tab_model is not None:
    with tab_model:
        schema = ui.design_schema()
        props = {k: v for k, v in schema["properties"].items() if k not in ("layers", "encoder", "decoder")}
        with st.form(state.key("model_form")):
            values = {}
            current = design.to_dict()
            top = st.columns([1, 3])
            for col, k in zip(top, ("name", "description")):
                with col:
                    values[k] = ui.schema_widget(k, props[k], current.get(k), f"model.{k}")
            cols = st.columns(4)
            rest = [k for k in props if k not in ("name", "description")]
            for i, k in enumerate(rest):
                with cols[i % 4]:
                    values[k] = ui.schema_widget(k, props[k], current.get(k), f"model.{k}")
            if st.form_submit_button("Apply model settings", type="primary"):
                changed = {k: v for k, v in values.items() if v != current.get(k)}
                if changed:
                    state.apply(lambda d: edits.set_fields(d, changed), "model settings")
                st.rerun()

if tab_yaml is not None:
    with tab_yaml:
        st.code(st.session_state[state.DESIGN_YAML_KEY], language="yaml")
