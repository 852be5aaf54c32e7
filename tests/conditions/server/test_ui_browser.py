"""The web pages in a real browser: the system Chromium driven by Playwright, against a
real ``python -m conditions.server`` on loopback with a small SQLite database.

Every page must load without console errors (a Content-Security-Policy violation is one),
show its content, keep hostile text inert, and work by keyboard and at phone width; the
timeline must show the right payload at a clicked run. Skipped, with the reason, only
where Chromium is not installed (``.ci/run`` installs the Debian package ``chromium``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from conditions.store import open_store

from . import ui_data
from .conftest import start_server
from .ui_data import CHECKPOINT, HOSTILE, HOSTILE_USER

CHROMIUM = os.environ.get("CONDITIONS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

if not Path(CHROMIUM).is_file():
    pytest.skip(f"Chromium not found at {CHROMIUM} (Debian package chromium; .ci/run installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ui-browser")
    url = f"sqlite:///{workdir / 'conditions.db'}"
    store = open_store(url, workdir / "payloads")
    try:
        ui_data.build(store, workdir / "inputs")
    finally:
        store.close()
    live = start_server(url, workdir / "payloads", workdir / "server.log")
    yield live
    live.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


class Tab:
    """A browser page that records console errors, failed requests and dialogs."""

    def __init__(self, browser, base: str, width: int = 1280, height: int = 900):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.base = base
        self.problems: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        # A request cancelled by the next navigation (say, a favicon still loading) is not a failure.
        self.page.on("requestfailed", lambda r: r.failure != "net::ERR_ABORTED"
                     and self.problems.append(f"request failed: {r.url} ({r.failure})"))
        self.page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))

    def open(self, path: str):
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == 200, f"{path}: {response and response.status}"
        return self.page

    def check(self) -> None:
        """No errors so far, and no hostile text ran."""
        assert self.page.evaluate("window.__xss") is None, "hostile text ran as script"
        assert not self.problems, self.problems


@pytest.fixture
def tab(browser, server):
    opened = Tab(browser, server.url)
    yield opened
    opened.check()
    opened.context.close()


def test_tags_page_filters_and_links(tab):
    page = tab.open("/ui/")
    assert page.title() == "Global tags · conditionsdb"
    rows = page.locator("#tags tbody tr")
    assert rows.count() == 2
    # the hostile description is shown as text, character for character
    assert HOSTILE in page.locator("#tags").inner_text()
    page.select_option("select[name=state]", "TESTING")
    page.click("form.filters button")
    page.wait_for_url(re.compile(r"state=TESTING"))
    assert page.locator("#tags tbody tr").count() == 1
    assert page.locator("#tag-count").inner_text() == "1 of 2 global tags"
    page.fill("input[name=q]", "calib_n*")
    page.select_option("select[name=state]", "")
    page.press("input[name=q]", "Enter")
    page.wait_for_url(re.compile(r"q=calib_n"))
    page.click("#tags >> text=calib_next")
    page.wait_for_url(re.compile(r"/ui/tags/calib_next$"))
    assert page.locator("h1").inner_text().startswith("calib_next")
    assert page.locator("#iov-total").inner_text() == "6"


def _click_run(page, run: int, row: str = "BeamSpot"):
    """Click the timeline where ``run`` is drawn, in the row of payload ``row``."""
    chart = page.locator("#timeline")
    box = chart.bounding_box()
    data = chart.evaluate("e => ({...e.dataset, vb: e.viewBox.baseVal.width})")
    lo, hi = int(data["runLo"]), int(data["runHi"])
    scale = box["width"] / data["vb"]
    x = float(data["plotLeft"]) + (run - lo + 0.5) / (hi - lo + 1) * float(data["plotWidth"])
    y = float(chart.locator(f'g.row[data-name="{row}"]').get_attribute("data-y")) + 9  # mid-bar
    bar_title = page.evaluate(
        "([x, y]) => { const e = document.elementFromPoint(x, y); return e && e.querySelector('title') "
        "? e.querySelector('title').textContent : null; }",
        [box["x"] + x * scale, box["y"] + y * scale])
    chart.click(position={"x": x * scale, "y": y * scale})
    return bar_title


@pytest.mark.parametrize("target", [20, 75, 130])
def test_timeline_shows_the_right_payload_at_a_clicked_run(tab, target):
    page = tab.open("/ui/tags/calib_main?exp=0")
    assert page.locator("#timeline g.row").count() == 3
    bar_title = _click_run(page, target)
    page.wait_for_url(re.compile(r"run=\d+"))
    run = int(parse_qs(urlsplit(page.url).query)["run"][0])
    assert abs(run - target) <= 1  # one run is under a pixel or two here
    expected = ui_data.beamspot_revision(0, run)
    # the bar under the pointer said so, and the answer after the click says the same
    assert bar_title.startswith(f"BeamSpot r{expected} wins")
    row = page.locator('#at-table tr[data-name="BeamSpot"]')
    assert row.get_attribute("data-revision") == str(expected)
    assert row.locator("td").first.inner_text() == f"r{expected}"
    assert page.locator("#timeline-cursor").get_attribute("visibility") is None
    # the revision link goes to that payload's page
    row.locator("td a").first.click()
    page.wait_for_url(re.compile(rf"/ui/payloads/BeamSpot/{expected}$"))
    assert page.locator("h1").inner_text() == f"BeamSpot r{expected}"


def test_timeline_by_keyboard(tab):
    page = tab.open("/ui/tags/calib_main?exp=0")
    page.locator("#timeline").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert page.locator("#timeline-readout").inner_text().startswith("run 3 ")
    page.keyboard.press("Shift+ArrowRight")  # a twentieth of the axis
    run = int(re.match(r"run (\d+)", page.locator("#timeline-readout").inner_text()).group(1))
    assert run > 4
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"run={run}#at$"))
    assert page.locator('#at-table tr[data-name="BeamSpot"]').get_attribute("data-revision") == \
        str(ui_data.beamspot_revision(0, run))


def test_resolve_box_and_iov_pages(tab):
    page = tab.open("/ui/tags/calib_main")
    page.fill("#at-run", "60")
    page.press("#at-run", "Enter")
    page.wait_for_url(re.compile(r"run=60"))
    overrides = page.locator('#at-table tr[data-name="BeamSpot"] td').last.inner_text()
    assert overrides.startswith("r1")  # r2 wins at run 60 over r1
    page.select_option("select[name=payload]", "BeamSpot")
    page.click("#iovs button")
    page.wait_for_url(re.compile(r"payload=BeamSpot"))
    assert page.locator("#iov-table tbody tr").count() == 3
    assert page.locator("#iov-summary").inner_text() == "3 IoVs of BeamSpot; page 1 of 1"


def test_checkpoint_page(tab):
    page = tab.open(f"/ui/payloads/{CHECKPOINT}/1")
    manifest = page.locator("#manifest").inner_text()
    for text in ("convnet", "train.h5 sha256:abc", "60", "Demo checkpoint", HOSTILE):
        assert text in manifest
    image = page.locator(".plots img")
    image.scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('.plots img').complete")
    assert image.evaluate("i => i.naturalWidth") > 100
    page.click("text=calib_main")
    page.wait_for_url(re.compile(r"/ui/tags/calib_main$"))


def test_diff_page(tab):
    page = tab.open("/ui/diff")
    page.fill("input[name=tag_a]", "calib_main")
    page.fill("input[name=tag_b]", "calib_next")
    page.fill("input[name=exp]", "0")
    page.fill("input[name=run]", "130")
    page.click("form.filters button")
    page.wait_for_url(re.compile(r"run=130"))
    assert page.locator("#diff-verdict").inner_text() == "Different"
    beam = page.locator("#diff-at tr", has_text="BeamSpot")
    assert beam.locator("td").last.inner_text() == "differs"
    assert page.locator("#only-b tbody tr").count() == 1


def test_audit_page(tab):
    page = tab.open("/ui/audit")
    assert HOSTILE_USER in page.locator("#audit").inner_text()
    page.fill("input[name=user]", "bob")
    page.press("input[name=user]", "Enter")
    page.wait_for_url(re.compile(r"user=bob"))
    who = page.locator("#audit tbody tr td:nth-child(2)").all_inner_texts()
    assert who and set(who) == {"bob"}
    page.locator("#audit tbody a", has_text="calib_next").first.click()
    page.wait_for_url(re.compile(r"/ui/tags/calib_next$"))


MAIN_PAGES = ["/ui/", "/ui/tags/calib_main?exp=0&run=75", f"/ui/payloads/{CHECKPOINT}/1",
              "/ui/diff?tag_a=calib_main&tag_b=calib_next&exp=0&run=130", "/ui/audit"]


def test_phone_width_keyboard_and_contrast(browser, server):
    phone = Tab(browser, server.url, width=390, height=844)
    try:
        for path in MAIN_PAGES:
            page = phone.open(path)
            # nothing wider than the screen: wide tables and the chart scroll in their boxes
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), path
            worst = page.evaluate(CONTRAST_JS)
            assert worst["ratio"] >= 4.5, (path, worst)
        page = phone.open("/ui/")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        for _ in range(3):
            page.keyboard.press("Tab")
        focused = page.evaluate("(() => { const e = document.activeElement; const s = getComputedStyle(e); "
                                "return [e.tagName, s.outlineStyle, s.outlineWidth]; })()")
        assert focused[0] == "A" and focused[1] != "none" and focused[2] != "0px"
        phone.check()
    finally:
        phone.context.close()


#: The lowest text/background contrast ratio on the page (WCAG formula), over visible text.
CONTRAST_JS = """() => {
  function rgb(c) { const m = c.match(/[\\d.]+/g).map(Number); return {r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1}; }
  function lum(c) { return [c.r, c.g, c.b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); })
                    .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0); }
  function background(e) { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.a > 0) return c; } return {r: 255, g: 255, b: 255, a: 1}; }
  let worst = {ratio: 99, text: null};
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode, e = node.parentElement;
    if (!node.textContent.trim() || !e || e.closest('svg') || !e.getClientRects().length) continue;
    const style = getComputedStyle(e);
    if (style.visibility === 'hidden' || e.closest('.skip')) continue;
    const a = lum(rgb(style.color)), b = lum(background(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst.ratio) worst = {ratio: ratio, text: node.textContent.trim().slice(0, 40), color: style.color};
  }
  return worst;
}"""


def test_internal_links_and_json_twins_work(server, browser):
    """Every link on the main pages answers (pages 200 HTML, twins 200 JSON)."""
    tab = Tab(browser, server.url)
    try:
        seen: set[str] = set()
        for path in MAIN_PAGES:
            page = tab.open(path)
            for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.getAttribute('href'))"):
                absolute = urljoin(server.url + path, href).split("#")[0]
                if absolute.startswith(server.url) and absolute not in seen:
                    seen.add(absolute)
        assert len(seen) > 20
        for link in sorted(seen):
            answer = requests.get(link, timeout=10)
            assert answer.status_code == 200, link
        twin = tab.open("/ui/tags/calib_main?exp=0&run=75").locator("a.json-link").get_attribute("href")
        data = requests.get(urljoin(server.url, twin), timeout=10).json()
        assert data["at"]["run"] == 75 and data["tag"]["name"] == "calib_main"
        tab.check()
    finally:
        tab.context.close()
