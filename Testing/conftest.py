"""Shared pytest setup.

* Every test runs single-threaded: the machines are shared by many processes and torch's default
  threads slow everything down 3–14× under contention.
* The user cache (hash cache, downloads) points at a per-session temporary folder so tests never
  touch ``~/.cache/knowledgesam``.
"""

import os
import tempfile

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("KNOWLEDGESAM_CACHE", tempfile.mkdtemp(prefix="knowledgesam-test-cache-"))


@pytest.fixture(scope="module")
def slicer_worker():
    """One inference process per test module of the Slicer front-ends (single-threaded, as torch here)."""
    from KnowledgeSAMLib import mrml

    process = mrml.WorkerProcess(env={"KNOWLEDGESAM_WORKER_THREADS": "1"})
    yield process
    process.stop()
