"""Named pause points, so a test can kill a run at an exact moment (kill -9 between two renames).

Why in the library: "nothing is lost when the process dies here" can only be tested if "here" is
reproducible. With ``KNOWLEDGESAM_TEST_PAUSE=<point>`` and ``KNOWLEDGESAM_TEST_PAUSE_FILE=<path>`` set,
:func:`pause_point` creates that file when the run reaches ``<point>`` and then sleeps until the test
deletes the file (or :data:`PAUSE_SECONDS` pass), so the test waits for the file and sends its signal, or
lets the run go on. Without the variables it does nothing (one dictionary look-up).
"""

from __future__ import annotations

import os
import time

__all__ = ["pause_point", "ENV_PAUSE", "ENV_PAUSE_FILE", "PAUSE_SECONDS"]

ENV_PAUSE = "KNOWLEDGESAM_TEST_PAUSE"
ENV_PAUSE_FILE = "KNOWLEDGESAM_TEST_PAUSE_FILE"
PAUSE_SECONDS = 120.0  # long enough for any test to act; a forgotten variable does not hang forever
_PAUSED: set[str] = set()  # each point pauses once per process (a progress callback passes it many times)


def pause_point(name: str) -> None:
    """Pause here when a test asked for ``name`` (see the module docstring); only the first time."""
    if os.environ.get(ENV_PAUSE) != name or name in _PAUSED:
        return
    _PAUSED.add(name)
    marker = os.environ.get(ENV_PAUSE_FILE)
    if marker:
        with open(marker, "w", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()} {name}\n")
    deadline = time.monotonic() + PAUSE_SECONDS
    while time.monotonic() < deadline and (not marker or os.path.exists(marker)):
        time.sleep(0.05)
