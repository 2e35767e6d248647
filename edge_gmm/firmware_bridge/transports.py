"""Where the virtual MCU writes: a pty (looks like a USB serial port) or a TCP socket (socket:// URLs).

Both never block the MCU loop for long: like a UART with nobody listening, bytes that cannot be
written go and are counted (`overruns`). `unplug()` / `replug()` mimic a USB cable pulled and
plugged back: the port path disappears, then comes back (a new pty behind the same --link).
"""

from __future__ import annotations

import os
import select
import socket
import tty
from pathlib import Path

from edge_gmm.errors import DeviceError

WRITE_WAIT_S = 0.1  # how long a full buffer may hold the MCU before bytes are dropped


class PtyTransport:
    def __init__(self, link: str | Path | None = None):
        self.link = Path(link) if link else None
        self.master: int | None = None
        self.slave: int | None = None
        self.path = ""
        self.overruns = 0
        self.replug()

    def replug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation: a byte written is a byte read
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        if self.link is not None:
            if self.link.is_symlink() or self.link.exists():
                if not self.link.is_symlink():
                    raise DeviceError(f"--link {self.link}: exists and is not a symlink; refusing to replace it")
                self.link.unlink()
            self.link.parent.mkdir(parents=True, exist_ok=True)
            self.link.symlink_to(self.path)

    def unplug(self) -> None:
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    close = unplug

    @property
    def port(self) -> str:
        return str(self.link) if self.link else self.path

    def write(self, data: bytes) -> int:
        if self.master is None:
            return 0
        return _write_all(self.master, data, self)

    def read(self) -> bytes:
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):  # EIO while no one has the port open
            return b""


class SocketTransport:
    """Listens on host:port; one client at a time, as a serial port has one reader."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.server = socket.create_server((host, port))
        self.server.setblocking(False)
        self.host, self.port_number = self.server.getsockname()[:2]
        self.client: socket.socket | None = None
        self.overruns = 0
        self.plugged = True

    @property
    def port(self) -> str:
        return f"socket://{self.host}:{self.port_number}"

    def _accept(self) -> None:
        if self.client is None and self.plugged:
            try:
                self.client, _ = self.server.accept()
                self.client.setblocking(False)
            except BlockingIOError:
                pass

    def write(self, data: bytes) -> int:
        self._accept()
        if self.client is None:
            self.overruns += 1
            return 0
        try:
            return _write_all(self.client.fileno(), data, self, sock=self.client)
        except OSError:  # the reader went away
            self._drop_client()
            return 0

    def read(self) -> bytes:
        self._accept()
        if self.client is None:
            return b""
        try:
            data = self.client.recv(4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self._drop_client()
        return data

    def _drop_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def unplug(self) -> None:
        self.plugged = False
        self._drop_client()

    def replug(self) -> None:
        self.plugged = True

    def close(self) -> None:
        self._drop_client()
        self.server.close()


def _write_all(fd: int, data: bytes, owner, sock: socket.socket | None = None) -> int:
    view = memoryview(data)
    sent = 0
    while sent < len(view):
        try:
            n = sock.send(view[sent:]) if sock is not None else os.write(fd, view[sent:])
            sent += n
        except BlockingIOError:
            # wait for the reader once; while it stays stalled, drop at once so the MCU keeps its pace
            _, w, _ = select.select([], [fd], [], 0 if getattr(owner, "stalled", False) else WRITE_WAIT_S)
            if not w:
                owner.overruns += 1  # nobody is draining the port: drop the rest, like a full UART FIFO
                owner.stalled = True
                return sent
    owner.stalled = False
    return sent
