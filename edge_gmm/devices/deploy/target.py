"""`user@host[:port]` (or `user@[v6addr]:port`) as one value object, with the ssh destination it stands for."""

from __future__ import annotations

import getpass
import re
from dataclasses import dataclass

from edge_gmm.errors import ConfigError

_HOST = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:@\s\[\]]+))(?::(?P<port>\d+))?$")


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str
    port: int = 22

    @classmethod
    def parse(cls, text: str) -> "SshTarget":
        m = _HOST.match((text or "").strip())
        if not m:
            raise ConfigError(
                f"--host {text!r}: expected user@host or user@host:port",
                hint="for example nvidia@jetson.local or nvidia@192.168.1.42:2222",
            )
        port = int(m["port"] or 22)
        if not 0 < port < 65536:
            raise ConfigError(f"--host {text!r}: port {port} is not in 1..65535")
        return cls(user=m["user"] or getpass.getuser(), host=m["v6"] or m["host"], port=port)

    @property
    def destination(self) -> str:
        """What ssh takes as its destination argument (the port goes in -p)."""
        return f"{self.user}@{self.host}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" + (f":{self.port}" if self.port != 22 else "")
