"""Shared pytest setup: keep every test single-threaded (the machines are shared by many processes)."""

import torch

torch.set_num_threads(1)
