"""The test suite, in three tiers (`make test` runs them all):

    tests/unit/      lib/ and the project's files, in seconds each; no workflow run (`make test-fast`)
    tests/workflow/  the real workflow and commands end to end: dry runs, tiny studies, make bench
    tests/cluster/   the workflow on a real SLURM cluster (tests/slurm/start.sh, as root)

`make test` spreads the test files over a few pytest-xdist workers (`-n 3 --dist loadfile
--no-loadscope-reorder`): most of a workflow test's time is one Snakemake process thinking
or a SLURM job waiting in the queue, so without them one core stays idle. A file runs on one
worker (its module fixtures are built once; the cluster tests take turns on the test
cluster's two CPUs), files are handed out in the order pytest_collection_modifyitems below
gives them, and the session's tiny study is built once for all workers
(tests/helpers/once.py). Plain `pytest` runs the same tests one after the other.

Helpers the tiers share are in tests/helpers/. The fixtures here: `http_server`, a local
HTTP server on 127.0.0.1 that tests feed with files, and `note`, a line for the end of the
test run's output (what a worker prints is not shown):

    def test_x(http_server, note):
        http_server.files["d/x.gz"] = b"..."      # served at http_server.url("d/x.gz")
        http_server.truncate["d/x.gz"] = 1         # the next 1 response sends half the body
        http_server.fail["d/x.gz"] = [503]         # the next response is an HTTP 503
        http_server.hits["d/x.gz"]                 # how many GETs it got
        note("AUROC 99.24 (published 99.31)")      # listed under "notes" when the run ends
"""
import collections
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        state = self.server.state
        path = self.path.lstrip("/")
        state.hits[path] += 1
        if state.fail.get(path):
            self.send_error(state.fail[path].pop(0))
            return
        if path not in state.files:
            self.send_error(404)
            return
        body = state.files[path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.truncate.get(path, 0) != 0:
            # Announce the full length, send half, hang up: what a dropped connection looks like.
            if state.truncate[path] > 0:
                state.truncate[path] -= 1
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)


class LocalServer:
    def __init__(self):
        self.files = {}
        self.truncate = {}  # path -> count of truncated responses to send next (-1: always)
        self.fail = {}      # path -> list of HTTP status codes to answer next
        self.hits = collections.Counter()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.state = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def url(self, path):
        return self.base + path

    def close(self):
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def http_server():
    server = LocalServer()
    yield server
    server.close()


# ---- order for pytest-xdist workers -------------------------------------------------

TIER_ORDER = ("tests/cluster/", "tests/workflow/", "tests/unit/")


def _tier(item) -> int:
    return next((rank for rank, prefix in enumerate(TIER_ORDER) if item.nodeid.startswith(prefix)), len(TIER_ORDER))


def pytest_collection_modifyitems(config, items):
    # Under xdist (`make test`) the cluster tier goes first: its SLURM jobs mostly wait, so
    # they run beside the other workers' work; then the workflow runs (tens of seconds
    # each), and the unit tests last fill the gaps. Plain pytest keeps the tiers' own order.
    if "PYTEST_XDIST_WORKER" in os.environ:  # collection happens on the workers
        items.sort(key=_tier)  # stable: within a tier, the collection order


# ---- notes for the end of the run ------------------------------------------------------

@pytest.fixture
def note(record_property):
    """note(text): show text under "notes" at the end of the run (workers' prints are lost)."""
    return lambda text: record_property("note", text)


def pytest_terminal_summary(terminalreporter):
    notes = [(report.nodeid, value) for reports in terminalreporter.stats.values() for report in reports
             if getattr(report, "when", "") == "call"
             for name, value in getattr(report, "user_properties", ()) if name == "note"]
    if notes:
        terminalreporter.section("notes")
        for nodeid, text in sorted(notes):
            terminalreporter.write_line(f"{nodeid.split('::')[0].rsplit('/', 1)[-1]}: {text}")
