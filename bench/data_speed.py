#!/usr/bin/env python
"""How long the data layer's per-case work takes on this machine (by hand, not in CI).

These were wall-clock assertions in the test suite, which failed whenever the machine was busy; they
measure speed, so they live here. Targets (one idle core): kidney phantom < 1 s, fundus phantom < 1.5 s,
MR percentile statistics of a 300 x 512 x 512 volume < 2 s (the tests check that the statistics read a
bounded subsample, which is what keeps them fast).

    python bench/data_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from KnowledgeSAMLib.data.intensity import get_preset  # noqa: E402
from KnowledgeSAMLib.data.phantoms import make_fundus_phantom, make_kidney_phantom  # noqa: E402
from KnowledgeSAMLib.data.volume import Image  # noqa: E402

TARGETS_S = {"kidney phantom (seed 11)": 1.0, "fundus phantom (seed 99)": 1.5, "MR statistics, 300x512x512": 2.0}


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    block = np.random.default_rng(2).normal(100, 30, (20, 512, 512)).astype(np.float32)
    volume = Image(np.tile(block, (15, 1, 1)))
    jobs = {"kidney phantom (seed 11)": lambda: make_kidney_phantom(11),
            "fundus phantom (seed 99)": lambda: make_fundus_phantom(99),
            "MR statistics, 300x512x512": lambda: get_preset("mr").fit(volume)}
    print(f"{'what':<32}{'median s':>10}{'target s':>10}")
    for name, job in jobs.items():
        seconds = median_seconds(job, args.repeats)
        print(f"{name:<32}{seconds:>10.3f}{TARGETS_S[name]:>10.1f}{'' if seconds <= TARGETS_S[name] else '  SLOW'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
