"""Designer (landing page): paint the layer grid, edit the stack, see the numbers."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from backend.errors import DesignError
from backend.plan import PATTERNS, find_pattern, to_string
from backend.registry import ATTENTION, MLP, NORM, REGISTRIES, role

import edits
import grid
import state
import ui

CATEGORY_LABELS = {"attention": "Attention", "mlp": "MLP", "norm": "Norm"}
MODEL_NORM = "(model norm)"
UNCHANGED = "(unchanged)"


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
        where = f"{stack_name} " if len(selection) > 1 else ""
        ok &= state.apply(lambda d, s=stack_name, u=unique: edits.paint(d, s, u, category, kind, params),
                          f"paint {kind} on {where}layers {edits.format_indices(unique)}")
    if ok:
        st.session_state[state.GRID_VERSION_KEY] += 1
        st.session_state[state.NOTICE_KEY] = None


def grid_panel(plan) -> tuple[dict[str, list[int]], bool]:
    """One grid figure per stack; returns the selected executed layers per stack and whether any layer is shared."""
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
    return selection, shared_any


def runnable_kinds(reg: dict[str, Any], design, stacks: list[str]) -> tuple[list[str], list[str]]:
    """Kinds of ``reg`` that can run in every one of ``stacks`` (the kind's own causal / bidirectional
    capabilities), and the others."""
    causal = {design.is_causal(s) for s in stacks}
    ok = [k for k, info in reg.items()
          if all(getattr(info, "causal", True) if c else getattr(info, "bidirectional", True) for c in causal)]
    return ok, [k for k in reg if k not in ok]


def brush_panel(plan, selection: dict[str, list[int]], shared_any: bool) -> None:
    """The brush: row, kind, its parameters, typed indices and the paint button."""
    design = state.design()
    # the stacks the brush will paint: those with a grid selection, else the typed indices' stack
    typed_stack = st.session_state.get("brush_indices_stack")
    scope = [s for s, v in selection.items() if v] or [typed_stack if typed_stack in plan.stacks else next(iter(plan.stacks))]
    with st.container(border=True):
        cols = st.columns([2, 2, 5, 2])
        with cols[0]:
            category = st.radio("Brush row", list(CATEGORY_LABELS), format_func=CATEGORY_LABELS.get, key="brush_category",
                                horizontal=False)
        reg = REGISTRIES[category]
        offered, refused = runnable_kinds(reg, design, scope)
        kind_key = f"brush_kind_{category}"
        if st.session_state.get(kind_key) not in (None, *offered):
            del st.session_state[kind_key]  # the last pick cannot run in this stack
        with cols[1]:
            kind = st.selectbox("Kind", offered, key=kind_key,
                                help="\n\n".join(f"**{k}**: {reg[k].description}" for k in offered))
            if refused:
                st.caption("Not offered (cannot run in the " + " / ".join(ui.md(s) for s in scope) + " stack): "
                           + ", ".join(ui.md(k) for k in refused))
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
                    ui.error(exc)
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

# Only the chosen editor renders (tabs would build every panel's widgets on every rerun).
PANELS = ["Layer table", "Reorder", "Pattern / string", "Rules", "Stack, repetition & flow", "Model settings", "YAML"]


def _keep_one(key: str) -> None:
    """on_change of a segmented control: clicking the active option would deselect it; keep it selected."""
    last = f"{key}__last"
    if st.session_state.get(key) is None:
        st.session_state[key] = st.session_state.get(last)
    else:
        st.session_state[last] = st.session_state[key]


def sticky_control(label: str, options: list[str], key: str, **kwargs: Any) -> str:
    """A segmented control that always has exactly one option selected."""
    default = kwargs.pop("default", options[0])
    value = st.segmented_control(label, options, default=default, key=key, on_change=_keep_one, args=(key,), **kwargs)
    value = value if value in options else default
    st.session_state[f"{key}__last"] = value
    return value


def choose_stack(stacks: dict[str, Any]) -> str:
    stack_names = list(stacks)
    if len(stack_names) > 1:
        return sticky_control("Edit stack", stack_names, "edit_stack", default=stack_names[-1])
    return stack_names[0]


def table_panel(plan) -> None:
    """The layer table (unique layers), in sync with the grid."""
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
                    state.apply(lambda d, s=stack_name, u=u, c=col, v=value: edits.paint(d, s, [u], c, v), f"table: {stack_name} layer {u} {col} → {value}")
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


def _restructure(edit_stack: str, order: list[int | None], what: str) -> None:
    """Apply a new unique-layer order (moved / duplicated / inserted / deleted) and say which form the stack took."""
    sp = state.plan().stacks[edit_stack]
    result: dict[str, str] = {}

    def _edit(d: dict[str, Any]) -> dict[str, Any]:
        new, result["note"] = edits.restructure(d, edit_stack, list(sp.unique), order)
        return new

    if state.apply(_edit, what):
        state.notice(f"{ui.md(what)}: {ui.md(result['note'])}.")
        st.session_state[state.GRID_VERSION_KEY] += 1


def structure_panel(sp, edit_stack: str, selected: list[int]) -> None:
    """Drag unique layers into a new order; duplicate, insert or delete the layers selected on the grid."""
    from streamlit_sortables import sort_items

    n = sp.n_unique
    labels = [f"{u.unique_index}: {grid.abbrev('attention', u.attention)} / {grid.abbrev('mlp', u.mlp)}" for u in sp.unique]
    st.caption("Drag a layer to move it (unique layers: with repetition every execution follows). The stack keeps its "
               "compact form when its rules still express the result; otherwise it becomes an explicit list.")
    new_labels = sort_items(labels, direction="horizontal", key=state.key(f"sortable_{edit_stack}"))
    if new_labels != labels and sorted(new_labels) == sorted(labels):
        order = [labels.index(x) for x in new_labels]
        # one drag moves one layer: the one whose removal leaves the others in their old order
        moved = next((k for k in order if [x for x in order if x != k] == [x for x in range(n) if x != k]), None)
        _restructure(edit_stack, order, "reorder layers" if moved is None else
                     f"move layer {moved} to position {order.index(moved)}")
        st.rerun()
    uniq = sorted({sp.executed[j].unique_index for j in selected if j < sp.depth})
    c = st.columns(4)
    c[0].write(f"**{len(uniq)}** unique layer{'s' if len(uniq) != 1 else ''} selected on the grid"
               + (f": {edits.format_indices(uniq)}" if uniq else ""))
    keep = [i for i in range(n) if i not in uniq]
    dup: list[int | None] = [j for i in range(n) for j in ([i, i] if i in uniq else [i])]
    c[1].button("Duplicate", icon=":material/content_copy:", key="struct_dup", disabled=not uniq, width="stretch",
                on_click=_restructure, args=(edit_stack, dup, f"duplicate layers {edits.format_indices(uniq)}"))
    after = (max(uniq) + 1) if uniq else n
    ins: list[int | None] = [*range(after), None, *range(after, n)]
    c[2].button("Insert a default layer" + (" after the selection" if uniq else " at the end"), icon=":material/add:",
                key="struct_insert", width="stretch", on_click=_restructure,
                args=(edit_stack, ins, f"insert a layer at {after}"))
    c[3].button("Delete", icon=":material/delete:", key="struct_delete", disabled=not uniq or not keep, width="stretch",
                on_click=_restructure, args=(edit_stack, keep, f"delete layers {edits.format_indices(uniq)}"))


def layout_panel(stack, sp, edit_stack: str) -> None:
    """Pattern / string / explicit list."""
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
            ui.error(err)
        if stack.string is None and st.button("Apply this string", key="apply_string"):
            _string_changed(skey)
            st.rerun()
        _rules_on_top(stack, edit_stack, "string")
    elif mode == "pattern":
        library = state.library_patterns()
        names = list(PATTERNS) + [n for n in library if n not in PATTERNS]
        cur_name = (stack.pattern if isinstance(stack.pattern, str) else stack.pattern.name) if stack.pattern else names[0]
        cur_params = {} if stack.pattern is None or isinstance(stack.pattern, str) else dict(stack.pattern.params)
        pname = st.selectbox("Pattern", names, index=names.index(cur_name) if cur_name in names else 0,
                             key=state.key(f"pattern_name_{edit_stack}"),
                             format_func=lambda n: f"{n}  (library)" if n in library and n not in PATTERNS else n)
        info = find_pattern(pname)
        if info is None:  # deleted from the library meanwhile
            ui.error(f"pattern {pname!r} is no longer in the library")
            return
        st.caption(ui.md(library[pname]) if pname in library and pname not in PATTERNS else info.description)
        _pattern_preview(edit_stack, pname, cur_params if pname == cur_name else {})
        with st.form(state.key(f"pattern_form_{edit_stack}")):
            values: dict[str, Any] = {}
            pcols = st.columns(3)
            for i, (k, help_) in enumerate(info.params.items()):
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
                        values[k] = st.text_input(k + " (YAML)", value="" if cur is None else json.dumps(cur), help=help_)
            if st.form_submit_button("Apply pattern", type="primary"):
                def _pattern_edit(d: dict[str, Any]) -> dict[str, Any]:
                    p = {k: edits.parse_yaml(v, f"{edit_stack}.pattern.params.{k}") if isinstance(v, str) else v
                         for k, v in values.items()}
                    p = {k: v for k, v in p.items() if v is not None}
                    return edits.set_layout(d, edit_stack, "pattern", {"name": pname, "params": p} if p else pname)

                state.apply(_pattern_edit, f"{edit_stack}.pattern")
                st.rerun()
        _rules_on_top(stack, edit_stack, "pattern")
    else:
        if stack.explicit is None:
            st.write("Freeze the current plan (pattern / string / rules resolved) into an explicit per-layer list.")
        else:
            st.write(f"The stack is an explicit list of {len(stack.explicit)} entries; painting and the table edit it.")
        if st.button("Bake current plan into an explicit list", key="bake", disabled=stack.explicit is not None and not stack.rules):
            state.apply(lambda d: edits.bake_explicit(d, edit_stack, list(sp.unique)), "bake explicit")
            st.rerun()


def _pattern_preview(edit_stack: str, pname: str, params: dict[str, Any]) -> None:
    """What the pattern gives on this stack (current depth, rules on top), before applying it."""
    ref = {"name": pname, "params": params} if params else pname
    try:
        candidate = state.validate(edits.set_layout(state.design().to_dict(), edit_stack, "pattern", ref))
        layers = state.cached_plan(state.canonical(candidate)).stacks[edit_stack].unique
        st.caption("Preview: `" + ui.md(to_string([(x.attention, x.mlp) for x in layers], candidate.stacks()[edit_stack].mlp)) + "`")
    except DesignError as exc:
        st.caption("Preview: " + ui.md(exc))


def _save_pattern_form(stack, edit_stack: str) -> None:
    """Save this stack's base kinds and rules as a named pattern in the design library."""
    with st.expander("Save these rules as a pattern (design library)", icon=":material/bookmark_add:"):
        with st.form(state.key(f"save_pattern_{edit_stack}")):
            c = st.columns([2, 1])
            name = c[0].text_input("Pattern name", placeholder="team/hybrid-4", key="pattern_save_name",
                                   help="lower-case words joined by '/', '-', '_' or '.'; saving an existing name adds a revision")
            author = c[1].text_input("Author", value=st.session_state.get("library_author", ""), key="pattern_save_author")
            message = st.text_input("Message", key=state.key("pattern_save_message"))
            if st.form_submit_button("Save pattern", icon=":material/save:"):
                from backend.patterns import save_pattern

                st.session_state["library_author"] = author
                try:
                    info = save_pattern(state.design(), name.strip(), stack=edit_stack, author=author, message=message)
                except DesignError as exc:
                    ui.error(exc)
                else:
                    state.forget_library_patterns()
                    st.success(f"Saved pattern {ui.md(name.strip())}@{info.revision}; it is in the pattern picker "
                               "(Pattern / string panel).")


def _rules_on_top(stack, edit_stack: str, what: str) -> None:
    """Rules still apply after a string or pattern: say so where the string is typed, and offer to clear them."""
    if not stack.rules:
        return
    n = len(stack.rules)
    c1, c2 = st.columns([5, 1])
    c1.warning(f"{n} rule{'s' if n != 1 else ''} (Rules panel) apply on top of the {what} and override it on the "
               "layers they match; the plan above includes them.", icon=":material/layers:")
    c2.button("Clear rules", key=state.key(f"clear_rules_{edit_stack}"), help="Remove every rule of this stack",
              on_click=lambda: state.apply(lambda d: edits.set_field(d, [edit_stack, "rules"], []), f"clear {edit_stack} rules"))


def rules_panel(stack, edit_stack: str) -> None:
    rules = stack.rules
    st.caption("Rules apply in order over unique-layer indices; a later rule overrides only the fields it sets. "
               "`when` keys must all hold.")
    for i, rule in enumerate(rules):
        when = {k: v for k, v in rule.when.model_dump(mode="json").items() if v is not None and not (k == "offset" and v == 0)}
        sets = ", ".join(f"{c}={getattr(rule, c)}" for c in edits.CATEGORIES if getattr(rule, c)) or "params only"
        with st.expander(ui.md(f"#{i}  when {json.dumps(when) if when else '(every layer)'} → {sets}"), expanded=False):
            bc = st.columns([1, 1, 1, 6])
            bc[0].button("↑", key=state.key(f"rule_up_{edit_stack}_{i}"), disabled=i == 0,
                         on_click=lambda i=i: state.apply(lambda d: edits.move_rule(d, edit_stack, i, -1), f"move rule #{i} up"))
            bc[1].button("↓", key=state.key(f"rule_down_{edit_stack}_{i}"), disabled=i == len(rules) - 1,
                         on_click=lambda i=i: state.apply(lambda d: edits.move_rule(d, edit_stack, i, 1), f"move rule #{i} down"))
            bc[2].button("✕", key=state.key(f"rule_del_{edit_stack}_{i}"), help="Remove this rule",
                         on_click=lambda i=i: state.apply(lambda d: edits.remove_rule(d, edit_stack, i), f"remove rule #{i}"))
            _rule_form(rule, i, edit_stack)
    if rules:
        _save_pattern_form(stack, edit_stack)
    ac = st.columns([2, 2, 2, 4])
    new_every = ac[0].number_input("New rule: every", min_value=1, value=2, step=1, key="new_rule_every")
    offered, _ = runnable_kinds(ATTENTION, state.design(), [edit_stack])
    others = [k for k in offered if k != stack.attention] or offered
    cheap = role("attention", "cheap")  # the kinds declare which one is the cheap mixer
    new_kind = ac[1].selectbox("attention", others, index=others.index(cheap) if cheap in others else 0, key="new_rule_kind")
    ac[2].write("")
    ac[2].button("Add rule", icon=":material/add:", key=state.key(f"add_rule_{edit_stack}"),
                 on_click=lambda: state.apply(lambda d: edits.add_rule(d, edit_stack, {"when": {"every": int(new_every)},
                                                                                     "attention": new_kind}),
                                              f"add rule every {int(new_every)} → {new_kind}"))


def _rule_form(rule, i: int, edit_stack: str) -> None:
    """Edit one rule's condition, kinds and params. Numbers are typed as text so a field can be cleared."""
    path = f"{edit_stack}.rules[{i}]"
    with st.form(state.key(f"rule_form_{edit_stack}_{i}")):
        wc = st.columns(6)
        every = wc[0].text_input("every", value="" if rule.when.every is None else str(rule.when.every),
                                 placeholder="—", help="Matches i >= offset and (i - offset) % every == 0; empty = unset")
        offset = wc[1].text_input("offset", value=str(rule.when.offset or 0), help="Used with every")
        pos_opts = ["—", "first", "last", "middle"]
        position = wc[2].selectbox("position", pos_opts, index=pos_opts.index(rule.when.position or "—"))
        # labels use the list form of the file and of the error messages; the help gives the meaning
        rng = wc[3].text_input("range [a, b]", value="" if rule.when.range is None else f"{rule.when.range[0]}, {rule.when.range[1]}",
                               help="a <= i < b")
        frac = wc[4].text_input("fraction [a, b]", value="" if rule.when.fraction is None else f"{rule.when.fraction[0]}, {rule.when.fraction[1]}",
                                help="a <= i / n < b (b = 1.0 includes the last layer)")
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
            def _rule_edit(d: dict[str, Any]) -> dict[str, Any]:
                ev = edits.parse_number(every, f"{path}.when.every")
                new_when: dict[str, Any] = {
                    "every": ev, "offset": (edits.parse_number(offset, f"{path}.when.offset") or 0) if ev else 0,
                    "position": None if position == "—" else position,
                    "range": edits.parse_numbers(rng, f"{path}.when.range"),
                    "fraction": edits.parse_numbers(frac, f"{path}.when.fraction", float),
                    "layer_idx": edits.parse_numbers(idx, f"{path}.when.layer_idx")}
                new_rule = {"when": {k: v for k, v in new_when.items() if v is not None and not (k == "offset" and not v)},
                            **{c: (None if v == UNCHANGED else v) for c, v in picks.items()},
                            "params": edits.parse_yaml(params_text, f"{path}.params", mapping=True) or {}}
                return edits.replace_rule(d, edit_stack, i, new_rule)

            state.apply(_rule_edit, f"update rule #{i}")
            st.rerun()


def stack_panel(stack, edit_stack: str) -> None:
    """Stack defaults, repetition and flow.

    Number fields have no browser-side bounds: an out-of-range value reaches the backend, whose
    message names the field (a clamped input would only show a tooltip and keep the old value).
    """
    _depth_fit_offer(edit_stack)
    with st.form(state.key(f"stack_form_{edit_stack}")):
        st.markdown(f"**Stack `{ui.md(edit_stack)}`**")
        c = st.columns(4)
        n_layers = c[0].number_input("n_layers (unique)", value=stack.n_layers, step=1)
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
        factor = r[1].number_input("factor", value=stack.repeat.factor, step=1)
        groups = r[2].text_input("groups (sizes)", value=", ".join(map(str, stack.repeat.groups or [])))
        gfactors = r[3].text_input("group factors", value=", ".join(map(str, stack.repeat.group_factors or [])))
        st.markdown("**Flow speed** — `x = x + s · f(norm(x))`")
        f = st.columns(4)
        flow_modes = ["none", "constant", "learned", "predicted"]
        fmode = f[0].selectbox("flow mode", flow_modes, index=flow_modes.index(stack.flow.mode))
        per_layer = f[1].checkbox("per executed layer", value=stack.flow.per_layer)
        fvalue = f[2].number_input("value (constant / initial)", value=float(stack.flow.value), format="%g")
        fhidden = f[3].number_input("predictor hidden", value=stack.flow.hidden, step=1)
        if st.form_submit_button("Apply stack settings", type="primary"):
            def _stack_edit(d: dict[str, Any]) -> dict[str, Any]:
                s = d[edit_stack]
                n = int(n_layers)
                s["n_layers"] = n
                if s.get("explicit") is not None and len(s["explicit"]) != n and n >= 1:
                    ex = s["explicit"]
                    s["explicit"] = (ex + [dict(ex[-1])] * n)[:n]
                s["attention"], s["mlp"] = att, mlp
                s["norm"] = None if norm == MODEL_NORM else norm
                s["params"] = edits.parse_yaml(sparams, f"{edit_stack}.params", mapping=True) or {}
                rep = {"mode": rmode, "factor": int(factor) if rmode in ("cycle", "layerwise") else 1}
                if rmode == "grouped":
                    rep["groups"] = edits.parse_numbers(groups, f"{edit_stack}.repeat.groups")
                    rep["group_factors"] = edits.parse_numbers(gfactors, f"{edit_stack}.repeat.group_factors")
                s["repeat"] = rep
                s["flow"] = {"mode": fmode, "per_layer": per_layer, "value": float(fvalue), "hidden": int(fhidden)}
                return d

            st.session_state[state.DEPTH_FIT_KEY] = None
            if not state.apply(_stack_edit, "stack settings"):
                _offer_depth_fit(_stack_edit, stack, edit_stack)
            st.rerun()


def _offer_depth_fit(stack_edit, stack, edit_stack: str) -> None:
    """A depth the rules or the string do not fit: offer the same edit with them fitted (never a dead end)."""
    from backend.plan import parse_string

    try:
        candidate = stack_edit(state.design().to_dict())
        items = parse_string(stack.string, stack.n_layers) if stack.string else None
        fixed, notes = edits.fit_depth(candidate, edit_stack, items)
        if notes:
            state.validate(fixed)
    except (DesignError, ValueError, KeyError, TypeError):
        return
    if notes:
        st.session_state[state.DEPTH_FIT_KEY] = (st.session_state[state.VERSION_KEY], edit_stack, fixed, notes)


def _depth_fit_offer(edit_stack: str) -> None:
    offer = st.session_state.get(state.DEPTH_FIT_KEY)
    if not offer or offer[0] != st.session_state[state.VERSION_KEY] or offer[1] != edit_stack:
        return
    _, _, fixed, notes = offer

    def _accept() -> None:
        st.session_state[state.DEPTH_FIT_KEY] = None
        state.set_design(fixed, "stack settings (rules / string fitted to the depth)")

    with st.container(border=True):
        st.markdown("**The new depth can be applied by fitting the layout to it:**  \n"
                    + "  \n".join(f"• {ui.md(n)}" for n in notes))
        st.button("Apply with these changes", key="depth_fit_apply", type="primary", on_click=_accept,
                  icon=":material/content_cut:")


def model_panel(design) -> None:
    """Model-level settings, generated from the Design's JSON schema."""
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
                state.apply(lambda d: edits.set_fields(d, changed), "model settings (" + ", ".join(changed) + ")")
            else:
                state.clear_error()  # nothing to apply: an older refusal must not stay up as if it were this one
            st.rerun()


def yaml_panel() -> None:
    st.code(st.session_state[state.DESIGN_YAML_KEY], language="yaml")


def main() -> None:
    design = state.design()
    djson = state.design_json()
    plan = state.plan()
    stacks = design.stacks()

    st.title("Designer")
    ui.banner()
    ui.headline(djson)
    for w in plan.warnings:
        st.caption(f":material/warning: {ui.md(w)}")

    selection, shared_any = grid_panel(plan)
    brush_panel(plan, selection, shared_any)

    edit_stack = choose_stack(stacks)
    stack = stacks[edit_stack]
    sp = plan.stacks[edit_stack]
    panel = sticky_control("Editor", PANELS, "editor_panel", label_visibility="collapsed")
    if panel == "Layer table":
        table_panel(plan)
    elif panel == "Reorder":
        structure_panel(sp, edit_stack, selection.get(edit_stack) or [])
    elif panel == "Pattern / string":
        layout_panel(stack, sp, edit_stack)
    elif panel == "Rules":
        rules_panel(stack, edit_stack)
    elif panel == "Stack, repetition & flow":
        stack_panel(stack, edit_stack)
    elif panel == "Model settings":
        model_panel(design)
    else:
        yaml_panel()


main()
