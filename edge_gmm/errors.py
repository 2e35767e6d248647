"""One exception root. The CLI turns any EdgeGmmError into one message and exit code 2."""


class EdgeGmmError(Exception):
    """A user-facing error: the message says what was wrong and, where possible, what to do."""

    exit_code = 2

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
