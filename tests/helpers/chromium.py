"""Drive Debian's headless chromium through the DevTools protocol over a pipe.

`--remote-debugging-pipe` makes chromium read protocol messages from fd 3 and write
them to fd 4, JSON separated by NUL bytes: no port, no websocket package.

    path, why_not = find_or_install_chromium()      # apt-get install chromium as root
    with Chromium(path, profile_dir) as browser:
        page = browser.new_page()
        page.call("Page.navigate", url="file:///tmp/report.html")
        page.wait_for("Page.loadEventFired")
        page.evaluate("document.title")
"""
import fcntl
import json
import os
import select
import shutil
import subprocess
import time

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def find_or_install_chromium(timeout=900):
    """(path of chromium, "") or (None, why it is missing and cannot be installed).

    Installs Debian's `chromium` with apt-get when run as root, as .ci/run does."""
    path = shutil.which("chromium")
    if path:
        return path, ""
    if not shutil.which("apt-get"):
        return None, "chromium is not installed and there is no apt-get to install it with"
    if os.geteuid() != 0:
        return None, "chromium is not installed and installing it needs root (apt-get install -y chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if result.returncode != 0:
            return None, f"`{' '.join(cmd)}` failed: {result.stderr.strip()[-500:]}"
    path = shutil.which("chromium")
    return (path, "") if path else (None, "apt-get installed chromium but it is not on PATH")


class ProtocolError(RuntimeError):
    pass


def _high_fd(fd):
    """A copy of fd numbered >= 10, so the shell's 3</4> redirections cannot clobber it.

    (bash, not sh: dash takes only one-digit fds in redirections.)"""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Chromium:
    def __init__(self, executable, profile_dir, log_path=None, extra_flags=()):
        self.executable, self.profile_dir = executable, str(profile_dir)
        self.log_path = log_path or os.path.join(self.profile_dir, "chromium.log")
        self.extra_flags = list(extra_flags)
        self.events, self._buffer, self._next_id = [], b"", 0

    def __enter__(self):
        os.makedirs(self.profile_dir, exist_ok=True)
        to_browser_r, to_browser_w = map(_high_fd, os.pipe())
        from_browser_r, from_browser_w = map(_high_fd, os.pipe())
        flags = [*FLAGS, f"--user-data-dir={self.profile_dir}", "--remote-debugging-pipe", *self.extra_flags]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', self.executable, *flags],
            pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._out, self._in = to_browser_w, from_browser_r
        return self

    def __exit__(self, *exc):
        try:
            self.call("Browser.close", timeout=10)
        except (ProtocolError, OSError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._out)
        os.close(self._in)
        self._log.close()

    def _read_message(self, deadline):
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("chromium did not answer in time; its log: " + self.log_path)
            ready, _, _ = select.select([self._in], [], [], left)
            if ready:
                chunk = os.read(self._in, 1 << 20)
                if not chunk:
                    raise ProtocolError("chromium closed the pipe (crashed?); its log: " + self.log_path)
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, session=None, timeout=60, **params):
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise ProtocolError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method, session=None, timeout=60):
        """The first event `method` (of `session`) not yet consumed."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method and (session is None or event.get("sessionId") == session):
                    return self.events.pop(i)
            reply = self._read_message(deadline)
            if "method" in reply:
                self.events.append(reply)

    def new_page(self):
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        return Page(self, session)


class Page:
    def __init__(self, browser, session):
        self.browser, self.session = browser, session

    def call(self, method, **params):
        return self.browser.call(method, session=self.session, **params)

    def wait_for(self, method, timeout=60):
        return self.browser.wait_for(method, session=self.session, timeout=timeout)

    def events(self, *methods):
        return [e for e in self.browser.events if e.get("sessionId") == self.session and e["method"] in methods]

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def load(self, url, timeout=60):
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", timeout=timeout)

    def errors(self):
        """Console errors, uncaught exceptions and error log entries since the page opened."""
        found = []
        for e in self.events("Runtime.exceptionThrown", "Runtime.consoleAPICalled", "Log.entryAdded"):
            p = e["params"]
            if e["method"] == "Runtime.exceptionThrown":
                found.append(("exception", p["exceptionDetails"].get("text", ""),
                              p["exceptionDetails"].get("exception", {}).get("description", "")))
            elif e["method"] == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                found.append(("console", p["type"], " ".join(str(a.get("value", a.get("description", "")))
                                                         for a in p["args"])))
            elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(("log", p["entry"].get("source", ""), p["entry"]["text"], p["entry"].get("url", "")))
        return found

    def requested_urls(self):
        return [e["params"]["request"]["url"] for e in self.events("Network.requestWillBeSent")]

    def click(self, x, y):
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def full_page_png(self, width=1280):
        """A screenshot of the whole page, `width` CSS pixels wide, as PNG bytes."""
        import base64

        self.call("Emulation.setDeviceMetricsOverride", width=width, height=800, deviceScaleFactor=1, mobile=False)
        height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(shot["data"])
