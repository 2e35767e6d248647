"""A scripted MQTT 5 / 3.1.1 peer on loopback: answers CONNECT and QoS 1 PUBLISH with chosen reason codes.

Real brokers refuse a publish with a PUBACK reason code >= 0x80 (0x87 not authorized, 0x97 quota
exceeded) and may keep the session open; mosquitto then disconnects, so it cannot show the "refused but
connected" case. This peer can, and it records what it got.

    python tests/mqtt/mqtt5_peer.py --port 0 --puback-reason 0x87 [--connack-reason 0x85]

prints `listening PORT` when ready, serves until SIGTERM/SIGINT, then prints one line
`summary {"connects": N, "publishes": N}`. The fault benchmark starts it this way: keep the CLI stable.
Importable: `with Mqtt5Peer(puback_reason=0x87) as peer: ... peer.port, peer.publishes, peer.connects`.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import socketserver
import sys
import threading
from dataclasses import dataclass

# MQTT 5 CONNACK reason -> the MQTT 3.1.1 return code closest to it
V311_CONNACK = {0: 0, 0x84: 1, 0x85: 2, 0x88: 3, 0x89: 3, 0x86: 4, 0x87: 5}


@dataclass
class Publish:
    topic: str
    qos: int
    payload: bytes
    packet_id: int | None


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    first = _read_exact(sock, 1)[0]
    length, shift = 0, 0
    while True:
        b = _read_exact(sock, 1)[0]
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return first, _read_exact(sock, length)


def _skip_props(body: bytes, pos: int) -> int:
    length, shift = 0, 0
    while True:
        b = body[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return pos + length


class Mqtt5Peer:
    def __init__(self, *, port: int = 0, host: str = "127.0.0.1", puback_reason: int = 0, connack_reason: int = 0):
        self.puback_reason = puback_reason  # may be changed while running
        self.connack_reason = connack_reason
        self.publishes: list[Publish] = []
        self.connects: list[tuple[str, int]] = []  # (client id, protocol level: 5 or 4)
        self._lock = threading.Lock()
        peer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    peer._serve(self.request)
                except (EOFError, OSError, IndexError):
                    pass

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> "Mqtt5Peer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "Mqtt5Peer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self, sock: socket.socket) -> None:
        level = 5
        while True:
            first, body = _read_packet(sock)
            kind = first >> 4
            if kind == 1:  # CONNECT
                level = self._on_connect(sock, body)
                if self.connack_reason >= 0x80:
                    return
            elif kind == 3:  # PUBLISH
                self._on_publish(sock, first, body, level)
            elif kind == 8:  # SUBSCRIBE: grant QoS 1 to every filter
                pid = body[:2]
                sock.sendall(bytes([0x90]) + _varint(2 + (level == 5) + 1) + pid + (b"\x00" if level == 5 else b"") + b"\x01")
            elif kind == 12:  # PINGREQ
                sock.sendall(b"\xd0\x00")
            elif kind == 14:  # DISCONNECT
                return

    def _on_connect(self, sock: socket.socket, body: bytes) -> int:
        name_len = int.from_bytes(body[0:2], "big")
        pos = 2 + name_len
        level = body[pos]
        pos += 4  # level, flags, keepalive
        if level == 5:
            pos = _skip_props(body, pos)
        cid_len = int.from_bytes(body[pos : pos + 2], "big")
        client_id = body[pos + 2 : pos + 2 + cid_len].decode("utf-8", "replace")
        with self._lock:
            self.connects.append((client_id, level))
        if level == 5:
            sock.sendall(bytes([0x20, 3, 0, self.connack_reason, 0]))
        else:
            sock.sendall(bytes([0x20, 2, 0, V311_CONNACK.get(self.connack_reason, 3)]))
        return level

    def _on_publish(self, sock: socket.socket, first: int, body: bytes, level: int) -> None:
        qos = (first >> 1) & 3
        tlen = int.from_bytes(body[0:2], "big")
        topic = body[2 : 2 + tlen].decode("utf-8", "replace")
        pos = 2 + tlen
        pid = None
        if qos:
            pid = int.from_bytes(body[pos : pos + 2], "big")
            pos += 2
        if level == 5:
            pos = _skip_props(body, pos)
        with self._lock:
            self.publishes.append(Publish(topic, qos, body[pos:], pid))
        if qos == 1:
            reason = self.puback_reason
            if level == 5:
                sock.sendall(bytes([0x40, 3]) + pid.to_bytes(2, "big") + bytes([reason]))
            else:  # MQTT 3.1.1 has no reason codes: a PUBACK is an ack
                sock.sendall(bytes([0x40, 2]) + pid.to_bytes(2, "big"))

    def summary(self) -> dict:
        with self._lock:
            return {"connects": len(self.connects), "publishes": len(self.publishes)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = a free port (printed)")
    ap.add_argument("--puback-reason", type=lambda s: int(s, 0), default=0x87, help="PUBACK reason code (default 0x87)")
    ap.add_argument("--connack-reason", type=lambda s: int(s, 0), default=0, help="CONNACK reason code (default 0)")
    args = ap.parse_args(argv)
    peer = Mqtt5Peer(port=args.port, host=args.host, puback_reason=args.puback_reason,
                     connack_reason=args.connack_reason).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"listening {peer.port}", flush=True)
    done.wait()
    peer.stop()
    print("summary " + json.dumps(peer.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
