"""Embedded broker: amqtt in a background thread, so a demo needs no system packages (FIELD-NOTES).

amqtt speaks MQTT 3.1.1 only, so `config` (and `--mqtt embedded`) pins the protocol to 3.1.1; a paho
MQTT 5 client would retry forever against it. About 1.7k QoS 1 messages/s: a demo broker, not a fleet's.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import sys
import threading

from edge_gmm.errors import DeviceError, MissingDependencyError
from edge_gmm.mqtt.url import BrokerConfig


class EmbeddedBroker:
    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        self.host = host
        self.port = port  # 0 = a free port, known after start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}?protocol=3.1.1"

    @property
    def config(self) -> BrokerConfig:
        return BrokerConfig(host=self.host, port=self.port, protocol="3.1.1")

    def start(self, timeout: float = 10.0) -> "EmbeddedBroker":
        try:
            from amqtt.broker import Broker
        except ImportError:
            if sys.version_info < (3, 10):  # amqtt 0.11+ needs 3.10, so `[device]` leaves it out below that
                raise MissingDependencyError(
                    "the embedded broker needs amqtt, which needs Python 3.10+",
                    hint="run a broker (apt install mosquitto) and pass --mqtt mqtt://HOST:1883",
                ) from None
            raise MissingDependencyError("the embedded broker needs amqtt: pip install amqtt") from None
        for name, level in (("amqtt", logging.ERROR), ("transitions", logging.WARNING)):
            if logging.getLogger(name).level == logging.NOTSET:  # amqtt warns on every refused client
                logging.getLogger(name).setLevel(level)
        cfg = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        async def boot():
            self._broker = Broker(cfg, loop=loop)
            await self._broker.start()
            server = self._broker._servers["default"].instance  # asyncio.Server: the bound port
            self.port = server.sockets[0].getsockname()[1]

        def main():
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(boot())
            except BaseException as e:  # reported to start(), which raises it in the caller's thread
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=main, name="embedded-broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise DeviceError(f"the embedded broker did not start within {timeout} s")
        if failure:
            self._thread = None
            e = failure[0]
            cause = e.__cause__ or e
            if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
                raise DeviceError(
                    f"cannot start the embedded broker: {self.host}:{self.port} is in use",
                    hint=f"a broker already listens there: use --mqtt mqtt://{self.host}:{self.port} to join it",
                ) from None
            raise DeviceError(f"cannot start the embedded broker: {cause}") from None
        return self

    def stop(self, timeout: float = 5.0) -> None:
        loop, thread, self._thread = self._loop, self._thread, None
        if thread is None or loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop).result(timeout)
        except Exception:  # shutting down anyway: a client that will not close must not hang us
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
