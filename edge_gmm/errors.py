"""One exception root. The CLI turns any EdgeGmmError into one message and its `exit_code`.

Exit codes (`run`, the systemd unit and the no-systemd supervisor agree; docs/troubleshooting.md):
0 a clean stop · 2 (EXIT_USER) a user or configuration error: restarting cannot fix it, so nothing restarts
it · 75 (EXIT_RESTART, sysexits' EX_TEMPFAIL) a runtime failure a restart may cure: restarted with backoff.
Any other non-zero code (1: an unexpected bug) is restarted too.

Which is which: ConfigError, DataError, BundleError, MissingDependencyError and DeviceError (a broker that refuses
us, a bad TLS setup, a remote device during deploy) exit 2. RuntimeFailure exits 75: a runner that cannot start
or warm up on this device (a DeviceError from CUDA/TensorRT, turned into one by Runner.activate), and the
loop's own ends that are not clean (devices/loop.py: assembly error, inference failing, sources down for good).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USER = 2
EXIT_RESTART = 75


class EdgeGmmError(Exception):
    """A user-facing error: the message says what was wrong and, where possible, what to do."""

    exit_code = EXIT_USER

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}\n  hint: {self.hint}" if self.hint else base


class ConfigError(EdgeGmmError):
    """A config file or option is wrong (unknown key, wrong type, bad value)."""


class DataError(EdgeGmmError):
    """A dataset or input file is malformed; the message names file and line/offset."""


class BundleError(EdgeGmmError):
    """A bundle is missing a file, has a wrong hash or signature, or does not fit this machine."""


class MissingDependencyError(EdgeGmmError):
    """An optional engine or tool (TensorRT, espeak-ng, modelopt, ...) is not installed."""


class DeviceError(EdgeGmmError):
    """A sensor, serial port, broker or remote device failed in a way the user can act on."""


class RuntimeFailure(EdgeGmmError):
    """The device job cannot go on now, but a restart may cure it: a full disk, a lost device node, a
    CUDA/TensorRT failure, a loop whose sources never came up. Exits EXIT_RESTART so a supervisor restarts it."""

    exit_code = EXIT_RESTART
