"""Build hook: ship the embedded default model inside wheels.

The model lives in the extension layout at ``Resources/Models/default`` (where the Slicer extension and
source checkouts find it). A wheel has no such folder, so ``build_py`` copies it to
``KnowledgeSAMLib/_models/default``, the registry's last candidate. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODEL_SOURCE = Path(__file__).parent / "Resources" / "Models" / "default"


class BuildPyWithModel(build_py):
    def run(self) -> None:
        super().run()
        if MODEL_SOURCE.is_dir():
            target = Path(self.build_lib) / "KnowledgeSAMLib" / "_models" / "default"
            shutil.copytree(MODEL_SOURCE, target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildPyWithModel})
