"""The report as a browser shows it, driven in Debian's headless Chromium with playwright (the system
browser at /usr/bin/chromium: nothing is downloaded at test time).

Checks what a reader does: the run table sorts and filters, a run page opens from it and draws its
curve, every image loads, nothing is wider than a 1280 px window, and no request leaves the file system.
Under CI=true a missing browser or playwright fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import cli

from hpc_unet.analysis.synthetic import make_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGES = ("report.html", "explore/runs.html", "explore/curves-architecture.html", "explore/curves-learning.html",
         "explore/importance.html", "explore/gallery.html")


def _require_browser() -> None:
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "playwright is not installed (pip install -e '.[test]')"
    if CHROMIUM is None:
        reason = "headless Chromium is not installed (apt-get install chromium; `./quickstart.sh test` does it)"
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser") / "grid"
    study = make_study(root, statuses={("UNet", 5e-3, 32): "oom"}, not_learning=[("UNet", 1e-4, 8)],
                       examples=True, test=True, seed=2)
    assert cli("analyze", "--study", study.root, "--bootstrap", "100", "--quiet") == 0
    return study.analysis_dir


def _open(browser, path: Path):
    """A 1280 px page that records every request that is not a file: URL and every script error."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.outside, page.errors = [], []
    page.on("request", lambda r: None if r.url.startswith(("file:", "data:", "blob:", "about:"))
            else page.outside.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(path.as_uri(), wait_until="load")
    return page


FIT = """() => {
  const root = document.documentElement;
  const wide = [...document.querySelectorAll('body *')].filter(e => {
    const r = e.getBoundingClientRect();
    if (r.width === 0 || r.right <= root.clientWidth + 1) return false;
    for (let p = e.parentElement; p; p = p.parentElement) {   // inside a box that scrolls sideways: fine
      const s = getComputedStyle(p);
      if (['auto', 'scroll', 'hidden'].includes(s.overflowX) && p.getBoundingClientRect().right <= root.clientWidth + 1) return false;
    }
    return true;
  }).map(e => e.tagName + '.' + e.className);
  const images = [...document.images];
  // the report's own tables must fit their box at 1280 px (no columns hidden off to the side)
  const clipped = [...document.querySelectorAll('div.scroll > table.t')].filter(
    t => t.parentElement.scrollWidth > t.parentElement.clientWidth + 1).map(t => t.rows[0].innerText.slice(0, 40));
  return {scrollWidth: root.scrollWidth, clientWidth: root.clientWidth, wide: wide.slice(0, 5).concat(clipped),
          images: images.length, broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)};
}"""


def _rows(page) -> list[list[str]]:
    return page.eval_on_selector_all("table.dataTable tbody tr",
                                     "rows => rows.map(r => [...r.cells].map(c => c.innerText.trim()))")


def test_every_page_loads_its_images_fits_1280_px_and_stays_offline(browser, report):
    for rel in PAGES:
        page = _open(browser, report / rel)
        page.wait_for_timeout(300)
        fit = page.evaluate(FIT)
        assert fit["broken"] == [], (rel, fit["broken"])
        assert fit["scrollWidth"] <= fit["clientWidth"] == 1280 and fit["wide"] == [], (rel, fit)
        assert page.outside == [] and page.errors == [], (rel, page.outside, page.errors)
        if rel in ("report.html", "explore/gallery.html"):
            assert fit["images"] > 0, rel
        page.close()


def test_run_table_sorts_filters_and_opens_a_run_page_with_its_curve(browser, report):
    page = _open(browser, report / "explore/runs.html")
    page.wait_for_selector("table.dataTable tbody tr")
    page.select_option("select[name$='_length'], .dt-length select", "-1")  # show every row
    header = page.locator("table.dataTable thead th", has_text="val soft Jaccard").first
    columns = page.eval_on_selector_all("table.dataTable thead th", "ths => ths.map(t => t.innerText.trim())")
    col = next(k for k, c in enumerate(columns) if c.startswith("val soft Jaccard"))
    all_rows = _rows(page)
    assert len(all_rows) == 36
    order = header.locator("button.dtcc-button_order")  # the column's sort button
    sorted_as = "(th, want) => th.getAttribute('aria-sort') === want"
    order.click()
    page.wait_for_function(f"({sorted_as})(document.querySelectorAll('table.dataTable thead th')[{col}], "
                           "'ascending')", timeout=10_000)
    values = [float(r[col]) for r in _rows(page) if r[col]]
    assert values == sorted(values) and len(values) == 35 and values != [float(r[col]) for r in all_rows if r[col]]
    page.wait_for_timeout(600)  # two quick clicks would be one double click
    order.click()  # second click: descending
    page.wait_for_function(f"({sorted_as})(document.querySelectorAll('table.dataTable thead th')[{col}], "
                           "'descending')", timeout=10_000)
    values = [float(r[col]) for r in _rows(page) if r[col]]
    assert values == sorted(values, reverse=True) and len(values) == 35  # the oom run has no score
    page.fill(".dt-search input", "Attention_ResUNet")
    filtered = _rows(page)
    assert len(filtered) == 12 and all("attresunet" in r[0] for r in filtered)
    first = filtered[0][0]
    page.click(f"table.dataTable tbody a:text-is('{first}')")
    page.wait_for_load_state("load")
    assert page.url.endswith(f"explore/runs/{first}.html")
    page.wait_for_selector("#curves .scatterlayer .trace path.js-line")
    drawn = page.eval_on_selector_all("#curves .scatterlayer path.js-line", "ps => ps.filter(p => "
                                      "(p.getAttribute('d') || '').length > 20).length")
    assert drawn >= 4  # train/val loss and Jaccard
    fit = page.evaluate(FIT)
    assert fit["broken"] == [] and fit["images"] >= 2 and fit["wide"] == [], fit
    assert page.outside == [] and page.errors == []


def test_the_checks_can_fail(browser, tmp_path):
    """A broken image, an element wider than the window and a request to the network are all caught."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img alt='gone' src='missing.png'><div style='width:2000px'>wide</div>"
                   "<div class='scroll' style='overflow-x:auto;width:300px'><table class='t'><tr><td style="
                   "'white-space:nowrap'>a table row much wider than its 300 px box, so columns hide</td></tr>"
                   "</table></div><script src='http://127.0.0.1:9/x.js'></script></body></html>")
    page = _open(browser, bad)
    fit = page.evaluate(FIT)
    assert len(fit["broken"]) == 1 and fit["scrollWidth"] > 1280
    assert fit["wide"][0] == "DIV." and fit["wide"][1].startswith("a table row much wider")
    assert page.outside == ["http://127.0.0.1:9/x.js"]


def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch):
    import sys

    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser test"):
        _require_browser()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        _require_browser()
