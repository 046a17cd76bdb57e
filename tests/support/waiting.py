"""Wait for a condition instead of sleeping a fixed time.

A fixed ``time.sleep`` is either too short on a loaded machine (a flaky test) or too long
everywhere else (a slow one). Poll the thing being waited for instead:

Example:
    wait_until(lambda: server_answers(port), timeout=30, message="the server to answer")
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold within the time allowed (an assertion: the test fails)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 15.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> T:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value.

    Args:
        predicate: what to wait for; an exception it raises ends the wait (it is not retried).
        timeout: seconds before giving up.
        interval: seconds between calls.
        message: what is waited for, in the error; a callable is called only on time-out
            (e.g. to add a log's tail).

    Returns:
        The predicate's first truthy value.

    Raises:
        WaitTimeout: the predicate stayed falsy for ``timeout`` seconds (checked once more at
            the deadline, so a slow predicate still gets its last chance).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or predicate}")
        time.sleep(interval)
