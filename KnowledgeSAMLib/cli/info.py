"""``knowledgesam info``: versions, the device that would be used, the model (backbone, where its pretrained
weights come from and their hash) and parameter counts per part."""

from __future__ import annotations

import argparse
import platform
import time

PARTS_ORDER = ["image_encoder", "lora", "prompt_encoder", "adaptor", "knowledge_merge", "prompt_merge", "mask_decoder"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="show versions, device and model size")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--model", default="default",
                       help="'default' (the embedded model, the default), a saved model folder, or a config name")
    which.add_argument("--config", default=None,
                       help="a config name (vit_b, lite, small, tiny): its architecture, knowledge heads untrained")
    parser.add_argument("--device", default="auto", help="device to report: auto, cpu, cuda or mps")
    parser.add_argument("--time", action="store_true", help="also time one forward pass (batch 1) on that device")
    parser.set_defaults(func=run)


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"cuda ({props.name}, {props.total_memory / 2**30:.1f} GiB)"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


def describe_weights(cfg) -> list[str]:
    """Where a model's pretrained base comes from (name, file, hash) — the provenance a user checks first."""
    from ..model.pretrained import BASES, locate_base

    backbone = {"vit": "SAM ViT (segment-anything)", "tiny_vit": "TinyViT (LiteMedSAM)"}.get(cfg.encoder, cfg.encoder)
    lines = [f"backbone: {backbone}, {cfg.image_size} px, embedding {cfg.prompt_dim}x{cfg.grid_size}x{cfg.grid_size}"]
    if cfg.sam_checkpoint_sha256 is None:
        lines.append("pretrained weights: none (trained from scratch)")
        return lines
    base = BASES.get(cfg.pretrained or "sam_vit_b")
    official = base is not None and cfg.sam_checkpoint_sha256 == base.checkpoint.sha256
    title = base.title if base is not None else "unknown base"
    lines.append(f"pretrained weights: {title}{'' if official else ' (a fine-tuned copy)'}, "
                 f"SHA256 {cfg.sam_checkpoint_sha256}, licence {base.licence if base else 'unknown'}")
    found = locate_base(base.key) if base is not None else None
    lines.append(f"base file on this machine: {found if found else 'not found (' + base.checkpoint.how_to_get + ')'}"
                 if base is not None else "base file: unknown")
    return lines


def weights_line(folder: str) -> str:
    """One line on a model folder's weights: verified against its config.json, or why not."""
    from ..model.weights import verify_weights

    found, recorded = verify_weights(folder)  # a mismatch is a WeightsError: the CLI prints it as an error
    if recorded is None:
        return (f"weights: sha256 {found} NOT VERIFIED (config.json records no hash; "
                f"`knowledgesam train --record-hash {folder}` adds it)")
    return f"weights: sha256 {found} (verified against config.json)"


def _load(args: argparse.Namespace):
    import warnings
    from pathlib import Path

    from ..model.build import build_model
    from ..model.registry import DEFAULT_MODEL_NAME, default_model_dir, resolve_model

    name = args.config or args.model
    folder = str(default_model_dir()) if name == DEFAULT_MODEL_NAME and not args.config else name
    if args.config or not Path(folder).is_dir():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return build_model(name), f"config {name} (knowledge heads untrained)"
    print(f"model: {folder}")
    print(weights_line(folder))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the line above already said whether the weights are verified
        return resolve_model(folder), f"model {args.model}"


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import __version__
    from ..infer.device import choose_device

    device = choose_device(args.device)
    print(f"knowledgesam {__version__}  python {platform.python_version()}  torch {torch.__version__}")
    print(f"device: {describe_device(device)}  (cuda available: {torch.cuda.is_available()})")
    model, what = _load(args)
    cfg = model.config
    print(f"{what}: config {cfg.name}  image {cfg.image_size}x{cfg.image_size}  grid {cfg.grid_size}x{cfg.grid_size}  "
          f"encoder training: {cfg.encoder_training}")
    for line in describe_weights(cfg):
        print(line)
    counts = model.parameter_counts()
    print(f"{'part':<16}{'total':>14}{'trainable':>14}")
    for part in sorted(counts, key=lambda p: PARTS_ORDER.index(p) if p in PARTS_ORDER else 99):
        print(f"{part:<16}{counts[part]['total']:>14,}{counts[part]['trainable']:>14,}")
    total = sum(c["total"] for c in counts.values())
    trainable = sum(c["trainable"] for c in counts.values())
    print(f"{'all':<16}{total:>14,}{trainable:>14,}")
    if args.time:
        model = model.to(device).eval()
        s = cfg.image_size
        x = torch.rand(1, 3, s, s, device=device)
        mask = torch.zeros(1, 1, s, s, device=device)
        mask[..., s // 4 : s // 2, s // 4 : s // 2] = 1
        with torch.inference_mode():
            model.encode(x)  # warm-up
            start = time.perf_counter()
            model.encode(x)
            encoder = time.perf_counter() - start
            start = time.perf_counter()
            model(x, x, mask)
            full = time.perf_counter() - start
        print(f"forward time (batch 1): encoder {encoder:.3f} s, full KSAM (2 encoder passes + heads) {full:.3f} s")
    return 0
