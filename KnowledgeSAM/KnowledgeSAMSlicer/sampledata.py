"""The kidney phantom (CT + reference segmentation) registered with Slicer's Sample Data module.

Why local files with checksums: a new user must be able to try the module in one click, offline, and
the files are small (a few hundred KB, made by ``KnowledgeSAM/Scripts/make_sample_data.py`` from
``KnowledgeSAMLib.data.phantoms.make_kidney_phantom``). Sample Data copies them into its cache and
verifies each SHA256 listed in ``Resources/SampleData/SampleData.json``.
"""

import hashlib
import json
import os
from pathlib import Path

__all__ = ["CATEGORY", "SAMPLE_NAME", "MANIFEST", "readManifest", "sha256", "register"]

CATEGORY = "KnowledgeSAM"
SAMPLE_NAME = "KnowledgeSAMKidneyPhantom"
MANIFEST = "SampleData.json"


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def readManifest(sampleDataDir):
    """``{"samples": [{"name", "description", "thumbnail", "files": [{"file", "sha256", "nodeName",
    "fileType"}]}]}`` from the sample-data folder."""
    with open(os.path.join(sampleDataDir, MANIFEST), encoding="utf-8") as handle:
        return json.load(handle)


def register(sampleDataDir, iconsDir):
    """Register every sample of the manifest (idempotent: Sample Data skips known sources)."""
    import SampleData

    manifest = readManifest(sampleDataDir)
    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):  # Slicer >= 5.10
        logic.registerCustomSampleDataCategory(CATEGORY, title="KnowledgeSAM")
    for sample in manifest["samples"]:
        files = sample["files"]
        thumbnail = os.path.join(iconsDir, sample["thumbnail"]) if sample.get("thumbnail") else None
        logic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=sample["name"],
            thumbnailFileName=thumbnail,
            uris=[Path(sampleDataDir, f["file"]).resolve().as_uri() for f in files],
            fileNames=[f["file"] for f in files],
            nodeNames=[f["nodeName"] for f in files],
            checksums=["SHA256:" + f["sha256"] for f in files],
            loadFileTypes=[f["fileType"] for f in files],
        )
