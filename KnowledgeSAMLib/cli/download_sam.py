"""``knowledgesam download-sam``: fetch and verify the official SAM ViT-B checkpoint (explicit user action).

The library never downloads on its own; this command (and the Slicer module's button) is the only way in.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download-sam",
        help="download and verify the SAM ViT-B checkpoint (375 MB) into the user cache",
        description=(
            "Download sam_vit_b_01ec64.pth, check its SHA256 and save it atomically. "
            "Pass the printed path to --sam-checkpoint. If the file is already there and verified, "
            "nothing is downloaded."
        ),
    )
    parser.add_argument("--dest", metavar="DIR", help="folder to save into (default: the user cache, "
                        "or $KNOWLEDGESAM_CACHE)")
    parser.add_argument("--url", help="download from this mirror or file:// URL instead (same SHA256 check)")
    parser.add_argument("--force", action="store_true",
                        help="download again and replace an existing file in DIR (only once the new copy verifies)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `knowledgesam --help` does not pay for this module's imports.
    from ..model.download import download_checkpoint
    from ..model.sam_checkpoint import SAM_VIT_B

    info = dataclasses.replace(SAM_VIT_B, url=args.url) if args.url else SAM_VIT_B
    path = download_checkpoint(info, cache_dir=args.dest, progress=not args.quiet, force=args.force)
    print(f"SAM ViT-B checkpoint (SHA256 verified): {path}", file=sys.stdout)
    return 0
