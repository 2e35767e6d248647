"""Shared helpers of the MQTT tests."""

import time


def wait_until(cond, timeout: float = 15.0) -> bool:
    """Poll `cond` until it is true (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False
