"""The report in a real browser: headless Chromium (Debian package `chromium`) loads the page
from a localhost server; every <img> must decode (naturalWidth > 0) and nothing may reach
the console as an error. A broken page is checked too, so that the check itself can fail.

Skipped when Chromium is missing, unless ZSIM_REQUIRE_BROWSER=1 (CI sets it after
`apt-get install -y chromium`).
"""

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# Recorded before anything else on the page runs: uncaught errors, failed resource loads
# (capture phase) and console.error calls; on load, every image's decode state.
CHECKER = """<script>
window.__zsimErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target && e.target.tagName ? 'resource ' + e.target.tagName + ' failed' : String(e.message);
  window.__zsimErrors.push(t);
}, true);
(function () { var orig = console.error; console.error = function () {
  window.__zsimErrors.push(Array.prototype.join.call(arguments, ' ')); return orig.apply(console, arguments); }; })();
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return {complete: i.complete, w: i.naturalWidth, h: i.naturalHeight}; });
  var pre = document.createElement('pre'); pre.id = 'zsim-check';
  pre.textContent = JSON.stringify({imgs: imgs, errors: window.__zsimErrors});
  document.body.appendChild(pre);
});
</script>"""


def _require_browser():
    if BROWSER is None:
        if os.environ.get("ZSIM_REQUIRE_BROWSER") == "1":
            pytest.fail("ZSIM_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def load_in_chromium(html_path: Path) -> dict:
    """Serve ``html_path``'s folder on localhost, load the page with the checker injected,
    return {"imgs": [...], "errors": [...], "console": [stderr console lines]}."""
    folder = Path(tempfile.mkdtemp(prefix="zsim-browser-"))
    profile = Path(tempfile.mkdtemp(prefix="zsim-chromium-"))
    try:
        shutil.copytree(html_path.parent, folder, dirs_exist_ok=True)
        page = folder / html_path.name
        text = page.read_text(encoding="utf-8")
        page.write_text(text.replace("<head>", "<head>" + CHECKER, 1), encoding="utf-8")
        handler = functools.partial(_Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/{page.name}"
            proc = subprocess.run(
                [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                 "--virtual-time-budget=10000", "--dump-dom", url],
                capture_output=True, text=True, timeout=120)
        finally:
            server.shutdown()
            server.server_close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(profile, ignore_errors=True)
    m = re.search(r'<pre id="zsim-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"checker output missing (chromium rc {proc.returncode}): {proc.stderr[-2000:]}"
    import html as _html
    result = json.loads(_html.unescape(m.group(1)))
    result["console"] = [ln for ln in proc.stderr.splitlines()
                         if "CONSOLE" in ln and ("rror" in ln or "Uncaught" in ln)]
    return result


def _assert_clean(result, min_images):
    assert len(result["imgs"]) >= min_images
    for i, img in enumerate(result["imgs"]):
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, f"image {i} did not decode: {img}"
    assert result["errors"] == []
    assert result["console"] == []


@pytest.fixture(scope="module")
def fresh_report():
    from test_report import built_report   # the same report test_report.py checks, built once
    return built_report()


def test_fresh_report_renders_in_chromium(fresh_report):
    _require_browser()
    _assert_clean(load_in_chromium(fresh_report.html), min_images=7)


def test_checked_in_example_renders_in_chromium():
    _require_browser()
    pages = sorted((ROOT / "reports").glob("*/report.html"))
    assert pages, "no example report under reports/"
    for page in pages:
        _assert_clean(load_in_chromium(page), min_images=7)


def test_the_check_catches_a_broken_page(tmp_path):
    # A truncated PNG, a missing file and a script error must all be reported.
    _require_browser()
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>x</title></head><body>"
                    '<img src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA">'
                    '<img src="missing.png">'
                    "<script>undefinedFunction();</script></body></html>", encoding="utf-8")
    result = load_in_chromium(page)
    assert [img["w"] for img in result["imgs"]] == [0, 0]
    assert any("undefinedFunction" in e for e in result["errors"])
    assert any("resource IMG failed" in e for e in result["errors"])
