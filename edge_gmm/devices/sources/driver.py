"""Run one Source in its own thread: hand chunks to the loop, report state, reconnect after failures.

States: `connecting` → `up` (first chunk arrived) → `down` (transport error; retried after a back-off
that doubles up to `BACKOFF_MAX_S`) or `ended` (a replay finished) or `failed` (a config or missing
dependency error: retrying cannot help). Transport errors (OSError, DeviceError) are kept apart from
errors the user must fix (STYLE.md #5); every wait is bounded by the stop event. Bad data (DataError) is
the user's to fix in a recording, so a replay fails; from live hardware it may be cured by the device
(re-described, re-flashed, plugged back), so a live source is retried like after a transport error.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from edge_gmm.errors import ConfigError, DataError, DeviceError, MissingDependencyError
from edge_gmm.devices.sources import Source

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 2.0  # a board plugged back in is picked up within this
FATAL = (ConfigError, MissingDependencyError)


class SourceDriver(threading.Thread):
    def __init__(self, source: Source, sink: Callable, on_state: Callable[["SourceDriver", str], None],
                 stop: threading.Event):
        super().__init__(name=f"source:{source.spec.scheme}", daemon=True)
        self.source = source
        self.sink = sink  # sink(chunk); may block when the source is lossless
        self.on_state = on_state
        self.stop_event = stop
        self.state = "connecting"
        self.error = ""
        self.restarts = 0
        self.chunks = 0

    def _set(self, state: str, error: str = "") -> None:
        self.state, self.error = state, error
        self.on_state(self, state)

    def run(self) -> None:
        delay = BACKOFF_MIN_S
        while not self.stop_event.is_set():
            self._set("connecting")
            try:
                for chunk in self.source.stream(self.stop_event):
                    if self.state != "up":
                        self._set("up")
                        delay = BACKOFF_MIN_S
                    self.chunks += 1
                    self.sink(chunk)
                if self.stop_event.is_set():
                    return
                if not self.source.reconnects:
                    self._set("ended")
                    return
                self._set("down", "stream ended")  # a live device that closed on its own: open it again
            except FATAL as e:
                self._set("failed", str(e))
                return
            except DataError as e:
                if not self.source.reconnects:  # a recording stays as bad as it is
                    self._set("failed", str(e))
                    return
                self._set("down", f"DataError: {e}")
            except Exception as e:  # transport errors and decoder bugs alike: a device loop keeps trying
                if not isinstance(e, (OSError, DeviceError)):
                    log.warning("source %s raised %s", self.source.describe(), type(e).__name__, exc_info=True)
                self._set("down", f"{type(e).__name__}: {e}")
                if not self.source.reconnects:
                    return
            self.restarts += 1
            if self.stop_event.wait(delay):
                return
            delay = min(delay * 2, BACKOFF_MAX_S)
