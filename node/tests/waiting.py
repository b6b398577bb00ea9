"""What the Python tests beside this file share: waiting on a condition with a deadline."""

import time


def wait_for(what, check, timeout=90):
    """Retries `check` until it returns something true (not a fixed sleep); a refused
    connection is "not yet"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"FAIL: timed out waiting for {what}")
