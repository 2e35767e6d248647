"""Live web view of predictions: a small page fed by server-sent events from a Subscriber.

`WebHub` keeps what the page shows — per device the latest prediction, the latest status and the last
HISTORY_S of labels and scores; the broker connection — and fans every change out to the open pages. Each
page has a bounded queue: a page that reads too slowly loses its queued events (counted in `dropped`) and
gets a fresh snapshot instead, so neither paho's thread nor memory ever waits on a browser.

`WebServer` (stdlib ThreadingHTTPServer) serves `/` (the page: edge_gmm/mqtt/web/, no build step),
`/events` (text/event-stream: a snapshot, then changes) and `/api/state` (the snapshot as JSON).

Payload strings come from the network: app.js writes them with textContent only, and every response carries
a Content-Security-Policy without inline script. On a loopback address a request naming another Host is
refused, so a web site cannot read the predictions through its visitor's browser (DNS rebinding).
"""

from __future__ import annotations

import collections
import ipaddress
import json
import logging
import pkgutil
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

from edge_gmm.errors import ConfigError

log = logging.getLogger(__name__)

HISTORY_S = 300.0  # the timeline's span
HISTORY_MAX = 3000  # points per device: 10 predictions/s over HISTORY_S
QUEUE_MAX = 256  # events waiting for one page; beyond it the page is resynchronized with a snapshot
KEEPALIVE_S = 10.0  # an idle stream sends a comment this often, so a closed page is noticed
RETRY_MS = 1000  # EventSource reconnects this soon after the stream drops
DEFAULT_HOST = "127.0.0.1"
ASSETS = {  # path -> (file under edge_gmm/mqtt/web/, content type)
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def parse_web_address(text: str) -> tuple[str, int]:
    """`[HOST:]PORT` -> (host, port); the host defaults to loopback, port 0 picks a free one."""
    host, _, port = text.rpartition(":")
    host = host or DEFAULT_HOST
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--web {text!r}: expected [HOST:]PORT with PORT 0..65535", hint="for example --web 8080")
    return host, int(port)


def _json(data: Any) -> str:
    # allow_nan=False: json.loads takes NaN from the network, but a browser's JSON.parse refuses it
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()  # compact JSON holds no newline


def _point(received_at: float, payload: dict[str, Any]) -> dict[str, Any]:
    """One timeline point: when it arrived, its seq, and label and score per task."""
    tasks = payload.get("tasks")
    tasks = tasks if isinstance(tasks, dict) else {}
    return {
        "t": received_at,
        "seq": payload.get("seq"),
        "tasks": {name: {"label": r.get("label"), "score": r.get("score")} for name, r in tasks.items() if isinstance(r, dict)},
    }


class _Device:
    def __init__(self) -> None:
        self.last: dict[str, Any] | None = None
        self.status: dict[str, Any] | None = None
        self.received_at = 0.0
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=HISTORY_MAX)

    def add(self, point: dict[str, Any]) -> None:
        self.history.append(point)
        while self.history[0]["t"] < point["t"] - HISTORY_S:
            self.history.popleft()

    def to_json(self) -> dict[str, Any]:
        return {"last": self.last, "status": self.status, "received_at": self.received_at, "history": list(self.history)}


class Page:
    """One open event stream: its queue of encoded events, and whether it fell behind."""

    def __init__(self) -> None:
        self.queue: queue.Queue[bytes] = queue.Queue(QUEUE_MAX)
        self.behind = False


class WebHub:
    """What the page shows, fed by Subscriber callbacks (paho's thread), read by the server's threads."""

    def __init__(self, broker_name: str):
        self._lock = threading.Lock()
        self._devices: dict[str, _Device] = {}
        self._broker = {"url": broker_name, "connected": False}
        self._pages: set[Page] = set()
        self.dropped = 0  # events a slow page never got (it got a snapshot instead)
        self.closed = threading.Event()

    # ------------------------------------------------------------ fed by the Subscriber

    def message(self, device_id: str, kind: str, payload: dict[str, Any], outcome: str | None) -> None:
        """Subscriber(on_message=...): a prediction or a status of one device."""
        now = time.time()
        try:
            body = _json(payload)
        except ValueError:  # NaN or Infinity: not JSON to a browser
            log.warning("web view: %s of %r skipped: it holds NaN or Infinity", kind, device_id)
            return
        point = _point(now, payload) if kind == "prediction" else None
        with self._lock:
            dev = self._devices.setdefault(device_id, _Device())
            if point is None:
                dev.status = payload
                data = f'{{"device_id":{_json(device_id)},"status":{body}}}'
            else:
                dev.last, dev.received_at = payload, now
                dev.add(point)
                data = f'{{"device_id":{_json(device_id)},"prediction":{body},"point":{_json(point)}}}'
            self._emit(kind, data)

    def connection(self, connected: bool) -> None:
        """Subscriber(on_connection=...): the broker connection came up or dropped."""
        with self._lock:
            self._broker["connected"] = connected
            self._emit("broker", _json(self._broker))

    def _emit(self, event: str, data: str) -> None:
        chunk = _sse(event, data)
        for page in self._pages:
            if page.behind:
                self.dropped += 1
                continue
            try:
                page.queue.put_nowait(chunk)
            except queue.Full:  # never wait for a browser: it gets a snapshot when it catches up
                page.behind = True
                self.dropped += 1

    # ------------------------------------------------------------ read by the server

    def state(self) -> dict[str, Any]:
        """The snapshot, plus the server's own counters (/api/state)."""
        with self._lock:
            return {**self._snapshot(), "web": {"pages": len(self._pages), "dropped_events": self.dropped}}

    def _snapshot(self) -> dict[str, Any]:
        return {
            "now": time.time(),
            "history_s": HISTORY_S,
            "broker": dict(self._broker),
            "devices": {device_id: dev.to_json() for device_id, dev in self._devices.items()},
        }

    def open(self) -> Page:
        """A new page; its first event is the snapshot, taken under the lock so no change falls in between."""
        page = Page()
        with self._lock:
            page.queue.put_nowait(_sse("snapshot", _json(self._snapshot())))
            self._pages.add(page)
        return page

    def close_page(self, page: Page) -> None:
        with self._lock:
            self._pages.discard(page)

    def stream(self, page: Page) -> Iterator[bytes]:
        """What to send to one page: its queued events, a snapshot after it fell behind, keep-alives when idle."""
        yield f"retry: {RETRY_MS}\n\n".encode()
        while not self.closed.is_set():
            if page.behind:
                yield self._resync(page)
                continue
            try:
                yield page.queue.get(timeout=KEEPALIVE_S)
            except queue.Empty:
                yield b": keep-alive\n\n"

    def _resync(self, page: Page) -> bytes:
        with self._lock:
            while not page.queue.empty():
                page.queue.get_nowait()
                self.dropped += 1
            page.behind = False
            return _sse("snapshot", _json(self._snapshot()))

    def close(self) -> None:
        """End every stream (the pages see the drop and show 'disconnected')."""
        self.closed.set()
        with self._lock:
            for page in self._pages:
                try:
                    page.queue.put_nowait(b"")  # wakes a stream waiting for events
                except queue.Full:  # a full queue's stream is not waiting
                    pass


class _Handler(BaseHTTPRequestHandler):
    server: WebServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if not self.server.host_allowed(self.headers.get("Host", "")):
            self._send(403, "text/plain; charset=utf-8", b"this web view answers only to its own address\n")
            return
        path = self.path.split("?", 1)[0]
        if path in ASSETS:
            self._send(200, ASSETS[path][1], self.server.assets[path])
        elif path == "/api/state":
            self._send(200, "application/json", _json(self.server.hub.state()).encode())
        elif path == "/events":
            self._events()
        elif path == "/favicon.ico":  # browsers ask for one; none is needed
            self._send(204, "image/x-icon", b"")
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found\n")

    def _headers(self, code: int, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self._headers(code, content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _events(self) -> None:
        hub = self.server.hub
        self._headers(200, "text/event-stream")
        self.send_header("Connection", "close")  # the stream ends the connection; no Content-Length
        self.end_headers()
        self.close_connection = True
        page = hub.open()
        try:
            for chunk in hub.stream(page):
                self.wfile.write(chunk)
                self.wfile.flush()
        except OSError:  # the page went away: BrokenPipe, ConnectionReset
            pass
        finally:
            hub.close_page(page)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (BaseHTTPRequestHandler's name)
        log.debug("web view: " + format, *args)


class WebServer(ThreadingHTTPServer):
    """The web view's HTTP server; `start()` serves in a thread, `stop()` ends the streams and closes."""

    daemon_threads = True  # an open event stream must not hold up the exit

    def __init__(self, hub: WebHub, host: str = DEFAULT_HOST, port: int = 0):
        self.hub = hub
        self.assets = {path: _asset(name) for path, (name, _) in ASSETS.items()}
        try:
            super().__init__((host, port), _Handler)
        except OSError as e:
            raise ConfigError(f"cannot serve the web view on {host}:{port}: {e.strerror or e}",
                              hint="pick another port, or 0 for a free one") from None
        self.host, self.port = host, self.server_address[1]
        self._allowed = _loopback_hosts(host, self.port)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        shown = DEFAULT_HOST if self.host in ("0.0.0.0", "") else self.host
        return f"http://{shown}:{self.port}/"

    def host_allowed(self, host_header: str) -> bool:
        return self._allowed is None or host_header in self._allowed

    def start(self) -> "WebServer":
        self._thread = threading.Thread(target=self.serve_forever, name="web-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.hub.close()
        if self._thread is not None:  # shutdown() waits for serve_forever, forever if it never ran
            self.shutdown()
            self._thread.join()
        self.server_close()


def _asset(name: str) -> bytes:
    # pkgutil, not importlib.resources.files (3.9+): the device side runs on Python 3.8
    data = pkgutil.get_data("edge_gmm.mqtt", f"web/{name}")
    if data is None:
        raise ConfigError(f"web view: edge_gmm/mqtt/web/{name} is missing", hint="reinstall edge-gmm")
    return data


def _loopback_hosts(host: str, port: int) -> set[str] | None:
    """Host headers a loopback server answers to; None (any) when bound to a network address."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost
        loopback = False
    if not loopback:
        return None
    return {f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]", host)}
