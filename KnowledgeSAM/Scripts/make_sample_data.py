"""Regenerate the Sample Data files of the Slicer module from the procedural kidney phantom.

Run from the repository root with the project's Python (not inside Slicer)::

    python KnowledgeSAM/Scripts/make_sample_data.py [--overwrite]

Writes into ``KnowledgeSAM/Resources/SampleData/``:

* ``KidneyPhantom1.nrrd`` + ``KidneyPhantom1-slice.seg.nrrd`` — a CT-like phantom and a reference
  segmentation drawn on one axial slice only, the one with the most kidney (try: reference volume =
  the target, mode auto);
* ``KidneyPhantom2.nrrd`` + ``KidneyPhantom2.seg.nrrd`` — another "patient", fully labelled (try it as
  the reference volume for phantom 1, mode volume);
* ``SampleData.json`` — file names, node names and SHA256 checksums (read by ``KnowledgeSAMSlicer.sampledata``),

and the thumbnails into ``KnowledgeSAM/Resources/Icons/``. Deterministic (fixed seeds).
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE.parent
sys.path.insert(0, str(MODULE_DIR))  # KnowledgeSAMSlicer
sys.path.insert(0, str(MODULE_DIR.parent))  # KnowledgeSAMLib in a source checkout


@dataclass(frozen=True)
class SampleConfig:
    shape: tuple = (32, 80, 80)  # (z, y, x): small enough for a few hundred KB, big enough to look like CT
    seeds: tuple = (11, 12)
    thumbnail_size: tuple = (260, 260)
    max_total_bytes: int = 800_000


def _thumbnail(image, labels, path, size):
    """The axial slice with the most labelled voxels, CT window, segments blended in their colours."""
    from PIL import Image as PILImage

    z = int(np.argmax(labels.layers.astype(bool).sum(axis=(0, 2, 3))))
    window, level = 400.0, 40.0
    grey = np.clip((image.array[z].astype(float) - (level - window / 2)) / window, 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    for segment in labels.segments:
        mask = labels.mask(segment)[z]
        color = np.asarray(segment.color or (1.0, 0.0, 0.0))
        rgb[mask] = 0.5 * rgb[mask] + 0.5 * color
    picture = PILImage.fromarray((rgb * 255).astype(np.uint8))  # LPS rows/columns: radiological display
    picture.resize(size, PILImage.NEAREST).save(path)


def _only_slice(labels, z):
    from KnowledgeSAMLib.data.volume import Labels

    layers = np.zeros_like(labels.layers)
    layers[:, z] = labels.layers[:, z]
    return Labels(layers=layers, geometry=labels.geometry, segments=list(labels.segments), source=labels.source)


def main(argv=None):
    from KnowledgeSAMLib.data.io import write_image, write_labels
    from KnowledgeSAMLib.data.phantoms import make_kidney_phantom
    from KnowledgeSAMSlicer.sampledata import CATEGORY, MANIFEST, SAMPLE_NAME, sha256

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    config = SampleConfig()
    out_dir = MODULE_DIR / "Resources" / "SampleData"
    icons = MODULE_DIR / "Resources" / "Icons"
    out_dir.mkdir(parents=True, exist_ok=True)

    (image1, labels1), (image2, labels2) = (make_kidney_phantom(seed, shape=config.shape) for seed in config.seeds)
    labelled = int(np.argmax(labels1.layers.astype(bool).sum(axis=(0, 2, 3))))  # the most telling slice
    files = [
        ("KidneyPhantom1.nrrd", image1, "KidneyPhantom1", "VolumeFile"),
        ("KidneyPhantom1-slice.seg.nrrd", _only_slice(labels1, labelled), "KidneyPhantom1 reference (one slice)",
         "SegmentationFile"),
        ("KidneyPhantom2.nrrd", image2, "KidneyPhantom2", "VolumeFile"),
        ("KidneyPhantom2.seg.nrrd", labels2, "KidneyPhantom2 reference", "SegmentationFile"),
    ]
    for name, data, _, kind in files:
        writer = write_image if kind == "VolumeFile" else write_labels
        writer(data, out_dir / name, overwrite=args.overwrite)
    _thumbnail(image1, _only_slice(labels1, labelled), icons / f"{SAMPLE_NAME}.png", config.thumbnail_size)
    _thumbnail(image2, labels2, icons / f"{SAMPLE_NAME}2.png", config.thumbnail_size)

    def entry(name, node_name, kind):
        return {"file": name, "sha256": sha256(out_dir / name), "nodeName": node_name, "fileType": kind}

    manifest = {
        "category": CATEGORY,
        "generator": "KnowledgeSAM/Scripts/make_sample_data.py",
        "samples": [
            {"name": SAMPLE_NAME, "description": "Kidney phantom CT with a one-slice reference segmentation",
             "thumbnail": f"{SAMPLE_NAME}.png",
             "files": [entry(*f[:1], f[2], f[3]) for f in files[:2]]},
            {"name": SAMPLE_NAME + "2", "description": "A second kidney phantom, fully labelled (a reference 'patient')",
             "thumbnail": f"{SAMPLE_NAME}2.png",
             "files": [entry(*f[:1], f[2], f[3]) for f in files[2:]]},
        ],
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    total = sum((out_dir / f[0]).stat().st_size for f in files)
    print(f"wrote {len(files)} files ({total / 1024:.0f} KB) and {MANIFEST} into {out_dir}")
    if total > config.max_total_bytes:
        print(f"warning: sample data exceed {config.max_total_bytes / 1024:.0f} KB; reduce SampleConfig.shape",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
