"""Training: knowledge-prompt pairs -> BCE + Dice -> Adam, single process or DDP through torchrun.

Modules (one job each): ``config`` (TrainConfig, YAML/JSON), ``sources`` (volumes -> model-size slice
cases), ``pairs`` (pair sampler), ``augment``, ``loss``, ``schedule``, ``validate`` (Dice per structure),
``checkpoint``, ``distributed`` and ``trainer`` (the loop). Entry point: ``knowledgesam train``.
"""

from __future__ import annotations

from .config import TrainConfig, config_from_dict, load_config

__all__ = ["TrainConfig", "load_config", "config_from_dict", "Trainer", "TrainResult"]


def __getattr__(name: str):  # the trainer pulls in torch; keep `import KnowledgeSAMLib.train.config` light
    if name in ("Trainer", "TrainResult"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'KnowledgeSAMLib.train' has no attribute {name!r}")
