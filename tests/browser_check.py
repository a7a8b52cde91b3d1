"""Load pages in headless Chromium and report JavaScript errors and broken images.

Talks the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages separated by NUL
bytes on file descriptors 3 and 4), so no websocket client or browser download is needed:
Debian's ``chromium`` package is enough.

    reports = check_pages(["file:///.../_build/html/index.html", ...])
    reports[url].problems   # [str, ...]; reports[url].final_url after redirects
    reports[url].value      # what the optional ``evaluate`` expression returned on that page
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import NamedTuple

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--remote-debugging-pipe",
]

# After load: images that finished loading with no pixels are broken.
_BROKEN_IMAGES_JS = """
Array.from(document.images)
     .filter(img => img.complete && img.naturalWidth === 0)
     .map(img => img.getAttribute('src'))
"""


# Every collapsed solution (sphinx-exercise ``:class: dropdown``, folded by
# sphinx-togglebutton): is its executed output hidden on load, and shown once a reader has
# clicked its title (and the unfolding transition has run)? Visibility is what the reader
# sees: CSS visibility, opacity and layout all count.
OPEN_SOLUTIONS_JS = """
(async () => {
  const shown = el => el !== null && el.checkVisibility(
      {visibilityProperty: true, opacityProperty: true}) && el.offsetHeight > 0;
  const solutions = Array.from(document.querySelectorAll('div.solution.dropdown'));
  const before = solutions.map(sol => shown(sol.querySelector('.cell_output')));
  solutions.forEach(sol => sol.querySelector('.admonition-title').click());
  await new Promise(resolve => setTimeout(resolve, 1000));
  return solutions.map((sol, i) => ({
    id: sol.id, has_output: sol.querySelector('.cell_output') !== null,
    hidden_before: !before[i], shown_after: shown(sol.querySelector('.cell_output'))}));
})()
"""


class PageReport(NamedTuple):
    final_url: str
    problems: list
    value: object = None


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure_chromium():
    """Path to a Chromium binary, installing Debian's package when missing (needs root)."""
    path = find_chromium()
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env,
                       capture_output=True, check=False, timeout=600)
        path = find_chromium()
    return path


class _Pipe:
    def __init__(self, chromium):
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()
        self._profile = tempfile.mkdtemp(prefix="svae-chromium-")
        # Chromium reads commands on fd 3 and writes replies on fd 4. A shell moves our pipe
        # ends there, so no Python code runs between fork and exec (JAX is multithreaded).
        # bash, not sh: dash cannot redirect from fds above 9.
        redirect = f'exec "$0" "$@" 3<&{to_child_r} 4>&{from_child_w}'
        self.proc = subprocess.Popen(
            ["bash", "-c", redirect, chromium, *CHROMIUM_FLAGS,
             f"--user-data-dir={self._profile}", "about:blank"],
            pass_fds=(to_child_r, from_child_w),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events = []

    def send(self, method, params=None, session=None, timeout=30.0):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, session, timeout=30.0):
        for i, ev in enumerate(self.events):
            if ev.get("method") == method and ev.get("sessionId") == session:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            ev = self._read(deadline)
            if ev.get("method") == method and ev.get("sessionId") == session:
                return ev
            self.events.append(ev)

    def _read(self, deadline):
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("no reply from Chromium")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        os.close(self._w)
        os.close(self._r)
        shutil.rmtree(self._profile, ignore_errors=True)


def _problems(events, session):
    out = []
    for ev in events:
        if ev.get("sessionId") != session:
            continue
        p = ev.get("params", {})
        if ev.get("method") == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text")
            out.append(f"JS error: {text} ({d.get('url', '')}:{d.get('lineNumber')})")
        elif ev.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
            e = p["entry"]
            out.append(f"console error ({e.get('source')}): {e.get('text')} {e.get('url', '')}")
    return out


def check_pages(urls, chromium=None, settle_seconds=1.0, evaluate=None):
    """{url: PageReport(final_url, problems, value)}: per page, uncaught JS exceptions,
    console/network errors and ``<img>`` elements that failed to load (after redirects,
    e.g. index.html → intro); ``value`` is what the JavaScript expression ``evaluate`` (e.g.
    :data:`OPEN_SOLUTIONS_JS`) returned there, after those checks (None without one)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium binary found")
    pipe = _Pipe(chromium)
    results = {}
    try:
        for url in urls:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget",
                                {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.events.clear()
            pipe.send("Page.navigate", {"url": url}, session=session)
            pipe.wait_for("Page.loadEventFired", session)
            time.sleep(settle_seconds)  # redirects (index.html) and late scripts (MathJax)
            broken = pipe.send("Runtime.evaluate", {"expression": _BROKEN_IMAGES_JS,
                                                    "returnByValue": True},
                               session=session)["result"].get("value", [])
            location = pipe.send("Runtime.evaluate", {"expression": "location.href",
                                                      "returnByValue": True},
                                 session=session)["result"].get("value")
            value = None
            if evaluate is not None:
                value = pipe.send("Runtime.evaluate", {"expression": evaluate,
                                                       "returnByValue": True,
                                                       "awaitPromise": True},
                                  session=session)["result"].get("value")
            problems = _problems(pipe.events, session)
            problems += [f"broken image: {src}" for src in broken]
            results[url] = PageReport(location, problems, value)
            pipe.send("Target.closeTarget", {"targetId": target})
    finally:
        pipe.close()
    return results
