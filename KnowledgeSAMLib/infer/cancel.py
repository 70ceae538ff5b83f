"""A cancel token shared between a long run and whoever may stop it (CLI Ctrl-C, Slicer's Cancel button).

Why a token and not an exception from outside: the engine checks it between batches, so a cancel never
interrupts a half-written output; the engine then raises :class:`CancelledError` and writes nothing.
"""

from __future__ import annotations

import threading

from ..errors import CancelledError

__all__ = ["CancelToken", "Progress"]


class CancelToken:
    """Thread-safe flag: ``cancel()`` from any thread, ``raise_if_cancelled()`` in the worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError("segmentation was cancelled; nothing was written")


class Progress:
    """Counts work units, reports ``callback(done, total)`` and checks the cancel token at each step."""

    def __init__(self, callback=None, cancel: CancelToken | None = None, total: int = 0) -> None:
        self.callback = callback
        self.cancel = cancel or CancelToken()
        self.total = int(total)
        self.done = 0

    def add_total(self, units: int) -> None:
        self.total += int(units)
        self._report()

    def advance(self, units: int = 1) -> None:
        self.done = min(self.total, self.done + int(units)) if self.total else self.done + int(units)
        self._report()

    def check(self) -> None:
        self.cancel.raise_if_cancelled()

    def _report(self) -> None:
        if self.callback is not None:
            self.callback(self.done, max(self.total, self.done))
        self.cancel.raise_if_cancelled()
