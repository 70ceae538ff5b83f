"""Extensions Index readiness (issue 19): the .s4ext-style draft and the catalog entry agree with the
extension's CMakeLists.txt (category, homepage, icon, screenshots, dependency on PyTorch, scm url), and every
screenshot URL names a PNG that exists in this repository (rendered from a real run by
KnowledgeSAM/Scripts/make_screenshot.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INDEX = ROOT / "docs" / "extensions-index"
RAW = "https://raw.githubusercontent.com/KnowledgeSAM/SlicerKnowledgeSAM/main/"


def cmake_values() -> dict[str, str]:
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    return dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', text))


def s4ext() -> dict[str, str]:
    fields = {}
    for line in (INDEX / "KnowledgeSAM.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def test_the_s4ext_draft_says_what_cmake_says():
    cmake, draft = cmake_values(), s4ext()
    assert draft["category"] == cmake["EXTENSION_CATEGORY"] == "Segmentation"
    assert draft["depends"] == cmake["EXTENSION_DEPENDS"] == "PyTorch"
    for key, variable in (("homepage", "EXTENSION_HOMEPAGE"), ("iconurl", "EXTENSION_ICONURL"),
                          ("contributors", "EXTENSION_CONTRIBUTORS"), ("description", "EXTENSION_DESCRIPTION"),
                          ("screenshoturls", "EXTENSION_SCREENSHOTURLS")):
        assert draft[key] == cmake[variable], key
    assert draft["scm"] == "git" and draft["scmurl"].startswith("https://github.com/") and draft["scmurl"].endswith(".git")
    assert draft["status"] and draft["enabled"] == "1"


def test_the_catalog_entry_matches_the_draft():
    entry, draft = json.loads((INDEX / "KnowledgeSAM.json").read_text(encoding="utf-8")), s4ext()
    assert entry["category"] == draft["category"] and entry["build_dependencies"] == [draft["depends"]]
    assert entry["scm_url"] == draft["scmurl"] and entry["scm_revision"] == draft["scmrevision"]


def test_every_screenshot_and_the_icon_exist_in_the_repository():
    from PIL import Image

    cmake = cmake_values()
    urls = cmake["EXTENSION_SCREENSHOTURLS"].split() + [cmake["EXTENSION_ICONURL"]]
    for url in urls:
        assert url.startswith(RAW), url
        path = ROOT / url[len(RAW):]
        assert path.is_file(), f"{url} points to {path}, which is missing"
        with Image.open(path) as picture:
            assert picture.format == "PNG" and min(picture.size) >= 128
