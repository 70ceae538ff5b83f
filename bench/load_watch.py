"""Whether a timed step ran on an otherwise idle machine: the 1-minute load average, sampled while it runs.

Why: the accuracy benchmark runs for hours and may share its machine with other work (a test suite, another
benchmark). Seconds measured then overstate what the machine can do; the report must say which timings were
taken on a busy machine rather than print them as the machine's speed. The load average counts the runnable
threads of every process, this one's included, so a step using ``threads`` threads alone keeps it near
``threads``; more means that something else wanted the CPUs too.
"""

from __future__ import annotations

import math
import os
import threading

__all__ = ["LoadWatch", "busy", "BUSY_SLACK"]

BUSY_SLACK = 0.75  # runnable threads above the step's own before its timing counts as taken on a busy machine


class LoadWatch:
    """Context manager: the mean of the 1-minute load average over the ``with`` block (``mean``; NaN where the
    platform has no load average). Sampled every ``every_s`` seconds from a daemon thread, once at the start and
    once at the end."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = float(every_s)
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        try:
            self._samples.append(float(os.getloadavg()[0]))
        except (AttributeError, OSError):  # no load average here (Windows)
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self) -> "LoadWatch":
        self._sample()
        self._thread = threading.Thread(target=self._run, name="load-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    @property
    def mean(self) -> float:
        return sum(self._samples) / len(self._samples) if self._samples else math.nan


def busy(mean_load: float | None, threads: int, slack: float = BUSY_SLACK) -> bool:
    """Whether a step that used ``threads`` threads ran while other work used the CPUs too (unknown load: no)."""
    return mean_load is not None and math.isfinite(mean_load) and mean_load > threads + slack
