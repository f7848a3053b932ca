"""report.html as a browser shows it: every image loads and nothing overflows the page at 1280 px.

Opens a copy of the report with a small probe script in headless Chromium (Debian's ``chromium``;
``./quickstart.sh test`` installs it) and reads the probe's result from the dumped DOM.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import pytest
from conftest import cli

from hpc_unet.analysis.synthetic import make_study

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install "
                                                          "chromium; `./quickstart.sh test` does it as root)")

PROBE = """<script>
window.addEventListener('load', () => {
  const root = document.documentElement;
  const images = [...document.images];
  const result = {
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    scrollWidth: root.scrollWidth, clientWidth: root.clientWidth,
  };
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify(result);
  document.body.appendChild(pre);
});
</script>"""


def probe(page, tmp_path) -> dict:
    copy = tmp_path / "probe.html"
    copy.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", "--virtual-time-budget=10000",
         "--dump-dom", copy.as_uri()],
        capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"no probe result (rc {proc.returncode}): {proc.stderr[-800:]}"
    return json.loads(html.unescape(found.group(1)))


def test_report_images_load_and_the_page_fits_1280_px(tmp_path):
    study = make_study(tmp_path / "grid", statuses={("UNet", 5e-3, 32): "oom"}, not_learning=[("UNet", 1e-4, 8)],
                       examples=True, test=True, seed=2)
    assert cli("analyze", "--study", study.root, "--bootstrap", "100", "--quiet") == 0
    page = study.analysis_dir / "report.html"
    figures = json.loads((study.analysis_dir / "summary.json").read_text())["figures"]
    assert "overlays" in [f["name"] for f in figures]
    result = probe(page, tmp_path)
    assert result["images"] == len(figures)
    assert result["broken"] == []
    assert result["scrollWidth"] <= result["clientWidth"] == 1280, result


def test_the_probe_can_fail(tmp_path):
    """A page with a broken image and a too-wide element is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><img alt='gone' src='data:image/png;base64,AAAA'>"
                    "<div style='width:2000px'>wide</div></body></html>")
    result = probe(page, tmp_path)
    assert result["broken"] == ["gone"] and result["scrollWidth"] > result["clientWidth"]
