"""A report page as a reader's browser shows it: headless Chromium renders it, measures it and takes a screenshot.

`check(page, width)` loads a copy of the page with a probe script injected at the top of <head>: it records console
errors, uncaught exceptions and resources that fail to load, and after `load` writes into the DOM (read back with
`--dump-dom`): the document's scroll width against the window's inner width, every image's natural width, and how
far each table overflows its box. Chromium is found on PATH (`chromium`, `chromium-browser`, `google-chrome`) or at
$PIPELINE_CHROMIUM; without it every function returns None and the caller says so.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

ENV_VAR = "PIPELINE_CHROMIUM"
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 120

_PROBE = """<script>
window.__probe_errors = [];
addEventListener('error', function (e) {
  var t = e.target, src = t && (t.src || t.href);
  src = src && (/^data:/.test(src) ? 'a data: URI of ' + src.length + ' characters' : String(src).split('/').pop());
  __probe_errors.push(src ? 'failed to load: ' + src : String(e.message));
}, true);
(function () { var o = console.error; console.error = function () {
  __probe_errors.push([].slice.call(arguments).join(' ')); o.apply(console, arguments); }; })();
addEventListener('load', function () {
  var d = document.documentElement, imgs = [].slice.call(document.images);
  var tables = [].slice.call(document.querySelectorAll('table')).map(function (t) {
    var box = t.parentElement, r = t.getBoundingClientRect();
    return {id: t.id || '', overflow: Math.max(0, Math.ceil(Math.max(t.scrollWidth - box.clientWidth,
            r.right - innerWidth)))};
  });
  var out = {scroll_width: d.scrollWidth, inner_width: innerWidth, height: d.scrollHeight,
             images: imgs.length, images_loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
             broken_images: imgs.filter(function (i) { return !(i.naturalWidth > 0); }).map(function (i) {
               return i.getAttribute('data-file') || i.alt || '?'; }),
             tables: tables, console_errors: __probe_errors};
  var pre = document.createElement('pre'); pre.id = '__probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def find() -> str | None:
    """The Chromium executable, or None."""
    env = os.environ.get(ENV_VAR)
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    return next((p for p in map(shutil.which, NAMES) if p), None)


def version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return " ".join(out.split()[:2]) or "unknown"


def _run(exe: str, args: list[str], width: int, height: int) -> subprocess.CompletedProcess | None:
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:  # no shared profile, no leftovers
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               "--disable-extensions", "--mute-audio", f"--user-data-dir={profile}", f"--window-size={width},{height}",
               "--virtual-time-budget=5000", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.SubprocessError):
            return None


def check(page: Path, width: int, height: int = 900, exe: str | None = None) -> dict | None:
    """Render `page` at `width` x `height` px; the probe's measurements (see the module doc), or None without Chromium
    (or when it produced no measurement: then {"error": ...})."""
    exe = exe or find()
    if exe is None:
        return None
    page = Path(page).resolve()
    text = page.read_text()
    probe = page.with_name(f".probe-{width}-{page.name}")  # beside the page: relative links resolve the same way
    at = text.find("<head>")
    probe.write_text(text[: at + 6] + _PROBE + text[at + 6:] if at >= 0 else _PROBE + text)
    try:
        r = _run(exe, ["--dump-dom", probe.as_uri()], width, height)
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', r.stdout if r else "", re.S)
    if not m:
        return {"error": "Chromium produced no measurement" + (f": {r.stderr.strip()[-300:]}" if r else " (timed out)")}
    out = json.loads(m.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&amp;", "&"))
    out["width"] = width
    return out


def screenshot(page: Path, png: Path, width: int, height: int, exe: str | None = None) -> bool:
    """A `width` x `height` px screenshot of the top of `page` into `png`; False without Chromium or on failure."""
    exe = exe or find()
    if exe is None:
        return False
    png = Path(png)
    tmp = png.with_name(f".{png.name}.tmp.png")
    r = _run(exe, [f"--screenshot={tmp}", Path(page).resolve().as_uri()], width, height)
    if r is None or not tmp.exists() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, png)
    return True
