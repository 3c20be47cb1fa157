"""The test suite, in three tiers (`make test` runs them all, in this order):

    tests/unit/      lib/ and the project's files, in seconds each; no workflow run (`make test-fast`)
    tests/workflow/  the real workflow and commands end to end: dry runs, tiny studies, make bench
    tests/cluster/   the workflow on a real SLURM cluster (tests/slurm/start.sh, as root)

Helpers the tiers share are in tests/helpers/. The fixture here, `http_server`, is a local
HTTP server on 127.0.0.1 that tests feed with files:

    def test_x(http_server):
        http_server.files["d/x.gz"] = b"..."      # served at http_server.url("d/x.gz")
        http_server.truncate["d/x.gz"] = 1         # the next 1 response sends half the body
        http_server.fail["d/x.gz"] = [503]         # the next response is an HTTP 503
        http_server.hits["d/x.gz"]                 # how many GETs it got
"""
import collections
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
