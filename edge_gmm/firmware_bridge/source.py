"""`open_bridge(url, **opts)`: the one factory the device loop and the CLI use for an MCU link."""

from __future__ import annotations

from edge_gmm.firmware_bridge.reader import BridgeReader


def open_bridge(url: str, **opts) -> BridgeReader:
    """A BridgeReader for `url` (device path, pty path, socket://HOST:PORT, loop://), not yet started.

    Options: format ("frames" | "ei-forwarder"), baudrate, queue_size, reconnect, wait_for_port,
    describe, at_commands, frequency / name / kind / units (ei-forwarder). Call `.start()`, then
    `.chunks(timeout)`, `.sensors()`, `.stats()`, `.stop()`; or use it as a context manager.
    """
    if url.startswith("serial://"):
        url = url[len("serial://"):]
    return BridgeReader(url, **opts)
