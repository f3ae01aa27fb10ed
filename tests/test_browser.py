"""End-to-end: Debian's Chromium (Playwright) against a real ``streamlit run app/main.py``.

Loads the designer from a share link, box-selects layers on the grid and
paints a kind, edits a cell of the layer table, sees the metrics change,
downloads the YAML and checks it, and saves screenshots to test-artifacts/.
Never runs ``playwright install``: it drives /usr/bin/chromium.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamlit_server import CHROMIUM, CHROMIUM_ARGS, metric as _metric, streamlit_server, wait_idle as _wait_idle

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (CI installs Debian's chromium; `apt-get install chromium`)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")


def _streamlit(password: str = ""):
    return streamlit_server({"BACKEND_APP_PASSWORD": password})


@pytest.fixture(scope="module")
def server():
    with _streamlit() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _wait_metric_change(page, label: str, old: str, timeout: float = 30) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = _metric(page, label)
        if value != old:
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"metric {label!r} stayed {old!r}")


def _plotly_ready(page) -> None:
    """Wait until plotly.js has drawn the first chart's data (it renders after the script run ends)."""
    page.wait_for_function("() => { const p = document.querySelector('[data-testid=\"stPlotlyChart\"] "
                           ".js-plotly-plot'); return p && p.data && p.data.length > 0; }")


def test_paint_edit_download(server, browser, tmp_path):
    from backend.share import encode_design
    from backend.spec import parse_design_text

    ARTIFACTS.mkdir(exist_ok=True)
    token = encode_design({"name": "browser-test", "layers": {"n_layers": 8}})
    page = browser.new_page(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    page.set_default_timeout(30_000)
    page.goto(f"{server}/?d={token}")
    page.wait_for_selector('[data-testid="stMetricValue"]')
    page.get_by_text("browser-test").first.wait_for()
    _wait_idle(page)
    params0 = _metric(page, "Parameters (unique)")

    # -- box-select the first layers on the grid (box select is the figure's default drag mode); plotly.js draws
    # the grid after the script finishes, so wait for its data first (a drag on an empty plot selects nothing)
    _plotly_ready(page)
    drag = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    bb = drag.bounding_box()
    assert bb, "the grid's plot area is not visible"
    sel_text = page.locator("p").filter(has_text="executed layers selected").first
    for _ in range(2):  # the selection event reaches the server asynchronously: wait for a nonzero count
        page.mouse.move(bb["x"] + bb["width"] * 0.01, bb["y"] + bb["height"] * 0.03)
        page.mouse.down()
        page.mouse.move(bb["x"] + bb["width"] * 0.45, bb["y"] + bb["height"] * 0.30, steps=12)
        page.mouse.up()
        page.get_by_text("executed layers selected").first.wait_for()
        _wait_idle(page)
        try:
            page.wait_for_function("() => [...document.querySelectorAll('p')].some(p => "
                                   "/^[1-9][0-9]* executed layers selected/.test(p.innerText))", timeout=10_000)
            break
        except Exception:  # noqa: BLE001 - drag again once; the assert below reports the count
            _plotly_ready(page)
    sel = sel_text.inner_text()
    assert int(sel.split()[0]) >= 2, sel

    # -- brush: spectral attention, then paint
    kind = page.locator('[data-testid="stSelectbox"]').filter(has_text="Kind").first
    kind.locator("input").click()
    page.keyboard.type("spectral")
    page.keyboard.press("Enter")
    _wait_idle(page)
    page.get_by_role("button", name="Paint selection").click()
    params1 = _wait_metric_change(page, "Parameters (unique)", params0)
    _wait_idle(page)
    assert page.locator('[data-testid="stPlotlyChart"]').first.get_by_text("SPEC").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "browser_designer_painted.png"), full_page=True)

    # -- edit a cell of the layer table: last layer's MLP -> moe (glide-data-grid: click, arrows, Enter, type, Enter).
    # Keyboard editing of the canvas grid can be swallowed while the grid re-renders after the paint rerun,
    # so the interaction is retried; the assertion (the parameter count changes because of it) is unchanged.
    params2 = None
    for attempt in range(3):
        _wait_idle(page)
        table = page.locator('[data-testid="stDataFrame"]').first
        table.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        tb = table.bounding_box()
        # click the first cell of the last row (row height 35 px, header 35 px), move to the mlp column
        row_y = tb["y"] + 35 + 35 * 7 + 17
        page.mouse.click(tb["x"] + 30, row_y)
        for _ in range(3):  # unique layer -> executed as -> attention -> mlp
            page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")
        page.wait_for_timeout(400)
        page.keyboard.type("moe")
        page.keyboard.press("Enter")
        page.wait_for_timeout(300)
        page.keyboard.press("Escape")
        try:
            params2 = _wait_metric_change(page, "Parameters (unique)", params1, timeout=15)
            break
        except AssertionError:
            page.screenshot(path=str(ARTIFACTS / f"browser_edit_attempt{attempt}.png"), full_page=True)
    assert params2 is not None, f"editing the table never changed the parameter count (stayed {params1!r})"
    _wait_idle(page)
    page.screenshot(path=str(ARTIFACTS / "browser_designer_edited.png"), full_page=True)
    assert params2 != params1

    # -- download the YAML from the export page and check its content
    page.get_by_role("link", name="Export / Import").click()
    page.get_by_role("button", name="Download YAML").wait_for()
    _wait_idle(page)
    with page.expect_download() as info:
        page.get_by_role("button", name="Download YAML").click()
    download = info.value
    assert download.suggested_filename.endswith((".yaml", ".yml"))
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    text = path.read_text()
    design = parse_design_text(text, "yaml")
    assert design.name == "browser-test"
    assert "spectral" in text and "moe" in text
    from backend.plan import resolve_plan

    layers = resolve_plan(design).stacks["layers"].unique
    assert layers[0].attention == "spectral"
    assert layers[-1].mlp == "moe"
    page.screenshot(path=str(ARTIFACTS / "browser_export.png"), full_page=True)
    page.close()


def test_password_deep_link_and_reload(browser):
    """Issue 14, finding 10: after the password a deep link lands on its page, and a reload does not ask again."""
    with _streamlit(password="team-pw") as url:
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{url}/export")
        page.get_by_label("Team password").fill("team-pw")
        page.get_by_role("button", name="Unlock").click()
        page.get_by_role("heading", name="Export / Import").wait_for()
        _wait_idle(page)
        assert page.url.split("?")[0].rstrip("/").endswith("/export")  # the query carries the design (?d=)
        assert any(c["name"] == "designer_auth" for c in context.cookies())
        page.reload()
        page.get_by_role("heading", name="Export / Import").wait_for()
        _wait_idle(page)
        assert page.get_by_label("Team password").count() == 0
        fresh = browser.new_context().new_page()  # another browser: still locked
        fresh.goto(f"{url}/export")
        fresh.get_by_label("Team password").wait_for(timeout=30_000)
        context.close()


def test_reload_keeps_the_design_and_user_text_stays_text(server, browser):
    """Issue 15 #2 / issue 14 #5: an edited design survives F5 (the address carries it); a hostile name
    and an error echoing ``SDPA*x`` are shown as the characters typed, and no image is fetched."""
    from backend.share import encode_design

    ARTIFACTS.mkdir(exist_ok=True)
    hostile = "![p](http://127.0.0.1:9/pixel.png) *x*"
    token = encode_design({"name": hostile, "layers": {"n_layers": 4}})
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(30_000)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url))
    page.goto(f"{server}/?d={token}")
    page.wait_for_selector('[data-testid="stMetricValue"]')
    _wait_idle(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    assert hostile in sidebar.inner_text().replace("\u2060", "")  # word joiners keep URLs from autolinking
    assert sidebar.locator('img[src*="127.0.0.1:9"]').count() == 0
    assert sidebar.locator('a[href*="127.0.0.1:9"]').count() == 0  # not even a link
    params0 = _metric(page, "Parameters (unique)")

    # an edit through the string notation, with a refused string first
    page.locator("button").filter(has_text="Pattern / string").first.click()
    _wait_idle(page)
    # issue 15 #9: a second click on the active editor tab keeps it open (and warns about nothing)
    page.locator("button").filter(has_text="Pattern / string").first.click()
    _wait_idle(page)
    page.get_by_text("Describe the layers by").wait_for(timeout=15_000)  # still (or again, after the rerun) open
    assert page.locator('[data-testid="stDataFrame"]').count() == 0  # not the layer table
    assert page.locator('[data-testid="stAlert"]').filter(has_text="default value").count() == 0
    page.get_by_text("String notation", exact=True).first.click()
    _wait_idle(page)
    box = page.locator('[data-testid="stTextInput"]').filter(has_text="String notation").locator("input")
    box.fill("SPECTRAL,SDPA*x")
    box.press("Enter")
    _wait_idle(page)
    alert = page.locator('[data-testid="stAlert"]').filter(has_text="SDPA").first
    assert "'SDPA*x'" in alert.inner_text()
    assert alert.locator("em").count() == 0  # no Markdown italics out of the stars
    box = page.locator('[data-testid="stTextInput"]').filter(has_text="String notation").locator("input")
    box.fill("SPECTRAL,SDPA*3")
    box.press("Enter")
    params1 = _wait_metric_change(page, "Parameters (unique)", params0)
    _wait_idle(page)
    page.wait_for_function("() => new URLSearchParams(location.search).get('d') !== null")
    page.screenshot(path=str(ARTIFACTS / "browser_before_reload.png"), full_page=True)

    page.reload()
    page.wait_for_selector('[data-testid="stMetricValue"]')
    _wait_idle(page)
    assert _metric(page, "Parameters (unique)") == params1
    assert hostile in page.locator('[data-testid="stSidebar"]').inner_text().replace("\u2060", "")
    assert page.locator('[data-testid="stPlotlyChart"]').first.get_by_text("SPEC").count() >= 1
    page.screenshot(path=str(ARTIFACTS / "browser_after_reload.png"), full_page=True)
    assert not [u for u in fetched if "127.0.0.1:9/" in u], fetched
    page.close()


def test_drag_a_layer_to_another_position(server, browser):
    """Issue 15 drag-and-edit: dragging a layer in the Reorder panel moves it; the grid and history follow."""
    from backend.share import encode_design

    ARTIFACTS.mkdir(exist_ok=True)
    token = encode_design({"name": "drag-test", "layers": {"n_layers": 4, "rules": [
        {"when": {"layer_idx": [0]}, "attention": "spectral"}]}})
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(30_000)
    page.goto(f"{server}/?d={token}")
    page.wait_for_selector('[data-testid="stMetricValue"]')
    _wait_idle(page)
    first_row = "() => document.querySelector('[data-testid=\"stPlotlyChart\"] .js-plotly-plot').data[0].text[0]"
    # the grid is drawn by plotly.js after the script finishes: wait for its data, not only the metrics
    page.wait_for_function("() => { const p = document.querySelector('[data-testid=\"stPlotlyChart\"] "
                           ".js-plotly-plot'); return p && p.data && p.data[0].text; }")
    assert page.evaluate(first_row)[0] == "SPEC"
    page.locator("button").filter(has_text="Reorder").first.click()
    _wait_idle(page)
    frame = page.frame_locator('iframe[title*="sortables"]').first
    items = frame.locator(".sortable-item")
    items.first.wait_for()
    assert items.count() == 4
    src, dst = items.nth(0).bounding_box(), items.nth(3).bounding_box()
    assert src and dst  # page coordinates (Playwright maps the frame's)
    page.mouse.move(src["x"] + src["width"] / 2, src["y"] + src["height"] / 2)
    page.mouse.down()
    page.mouse.move(src["x"] + src["width"] / 2 + 5, src["y"] + src["height"] / 2, steps=3)
    page.mouse.move(dst["x"] + dst["width"] * 0.9, dst["y"] + dst["height"] / 2, steps=15)
    page.mouse.up()
    page.locator('[data-testid="stAlert"]').filter(has_text="move layer 0 to position 3").first.wait_for()
    _wait_idle(page)
    try:  # plotly.js redraws after the script: give it time to show the new order
        page.wait_for_function(f"() => {{ const r = ({first_row})(); return r[0] !== 'SPEC' && r[3] === 'SPEC'; }}",
                               timeout=15_000)
    except Exception:  # noqa: BLE001 - the assert below shows the row
        pass
    row = page.evaluate(first_row)
    assert row[0] != "SPEC" and row[3] == "SPEC", row
    page.screenshot(path=str(ARTIFACTS / "browser_drag_reorder.png"), full_page=True)
    page.close()


WORKFLOW_PAGES = [  # (sidebar link, heading it opens, what the page must show)
    ("Analysis", "Analysis", "workflow"),
    ("Diagram", "Diagram", "workflow"),
    ("Training plan", "Training plan", "workflow"),
    ("Smoke test", "Smoke test", "Run smoke test"),
    ("Probe", "Probe", "workflow"),
    ("Export / Import", "Export / Import", "SPECTRAL"),
    ("Compare", "Compare", "workflow"),
    ("Library", "Library", "workflow"),
]


def _no_crash(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').first.inner_text()
    assert page.get_by_text("This app has encountered an error").count() == 0


def test_whole_workflow_every_page_and_reload(server, browser):
    """Issue 15, done-when: one walk through the workflow (string edit -> every page -> smoke -> export ->
    back, reload), a screenshot of each page in test-artifacts/, no page crashes, the design survives reload."""
    from backend.share import encode_design

    ARTIFACTS.mkdir(exist_ok=True)
    token = encode_design({"name": "workflow", "layers": {"n_layers": 4}})
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{server}/?d={token}")
    page.wait_for_selector('[data-testid="stMetricValue"]')
    _wait_idle(page)
    params0 = _metric(page, "Parameters (unique)")
    page.locator("button").filter(has_text="Pattern / string").first.click()
    _wait_idle(page)
    page.get_by_text("String notation", exact=True).first.click()
    _wait_idle(page)
    box = page.locator('[data-testid="stTextInput"]').filter(has_text="String notation").locator("input")
    box.fill("SPECTRAL,SDPA*3")
    box.press("Enter")
    params1 = _wait_metric_change(page, "Parameters (unique)", params0)
    _wait_idle(page)
    _no_crash(page)
    page.screenshot(path=str(ARTIFACTS / "workflow_00_designer.png"), full_page=True)

    nav = page.locator('[data-testid="stSidebarNav"]')
    for i, (link, heading, shown) in enumerate(WORKFLOW_PAGES, start=1):
        nav.get_by_text(link, exact=True).first.click()
        page.get_by_role("heading", name=heading).first.wait_for()
        _wait_idle(page, timeout=90)
        page.get_by_text(shown).first.wait_for(state="attached")  # (the export text sits in a tab)
        if link == "Smoke test":
            page.get_by_role("button", name="Run smoke test").click()
            page.get_by_text("passed in").first.wait_for(timeout=180_000)
            _wait_idle(page, timeout=90)
        _no_crash(page)
        page.screenshot(path=str(ARTIFACTS / f"workflow_{i:02d}_{link.split()[0].lower()}.png"), full_page=True)

    nav.get_by_text("Designer", exact=True).first.click()
    page.wait_for_selector('[data-testid="stMetricValue"]')
    _wait_idle(page)
    assert _metric(page, "Parameters (unique)") == params1
    page.reload()
    page.wait_for_selector('[data-testid="stMetricValue"]')
    _wait_idle(page)
    assert _metric(page, "Parameters (unique)") == params1  # the address carries the edited design
    assert page.locator('[data-testid="stPlotlyChart"]').first.get_by_text("SPEC").count() >= 1
    _no_crash(page)
    page.screenshot(path=str(ARTIFACTS / "workflow_10_designer_after_reload.png"), full_page=True)
    page.close()
