"""What KnowledgeSAM needs in Slicer's Python, what is missing, and what must never be replaced.

The facts (:func:`readRequirements`, :func:`missingRequirements`, :func:`torchMissing`,
:func:`protectedConstraints`) need no Slicer and are tested with plain pytest; the install itself is
``KnowledgeSAMSlicer.installer`` (one confirmation, installers as background processes).
:func:`installPyTorchExtension` is the one step that needs Slicer's extensions manager.
"""

import importlib.metadata
import importlib.util
import re

__all__ = [
    "PROTECTED_PACKAGES", "TORCH_REQUIREMENT", "REQUESTER", "readRequirements", "missingRequirements",
    "torchMissing", "protectedConstraints", "pyTorchExtensionInstalled", "lightTheTorchInstalled",
    "installPyTorchExtension",
]

REQUESTER = "KnowledgeSAM"
TORCH_REQUIREMENT = ">=2.1"
# Packages Slicer ships (or that another extension installed) that our requirements must never replace.
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk", "requests", "torch", "scipy", "pydicom")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def readRequirements(path):
    """Requirement lines of a requirements.txt (comments, blank lines and pip options skipped)."""
    with open(path, encoding="utf-8") as handle:
        lines = [line.split("#", 1)[0].strip() for line in handle]
    return [line for line in lines if line and not line.startswith("-")]


def _installedVersion(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfied(requirement):
    """Is the requirement installed at an acceptable version? (packaging when available, else presence)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging ships with pip/Slicer
        match = _NAME.match(requirement)
        return bool(match) and _installedVersion(match.group(1)) is not None
    parsed = Requirement(requirement)
    if parsed.marker is not None and not parsed.marker.evaluate():
        return True
    installed = _installedVersion(parsed.name)
    return installed is not None and (not parsed.specifier or parsed.specifier.contains(installed, prereleases=True))


def missingRequirements(requirements):
    """The requirements (strings) that are not satisfied in this Python."""
    return [requirement for requirement in requirements if not _satisfied(requirement)]


def torchMissing():
    """From the installed packages' metadata: torch itself is not imported (that costs seconds)."""
    return not _satisfied("torch" + TORCH_REQUIREMENT)


def protectedConstraints():
    """``name==version`` for each protected package that is installed (a pip constraints file's lines)."""
    lines = []
    for name in PROTECTED_PACKAGES:
        version = _installedVersion(name)
        if version is not None:
            lines.append(f"{name}=={version}")
    return lines


def pyTorchExtensionInstalled():
    """Is the PyTorch extension's ``PyTorchUtils`` module importable here?"""
    return importlib.util.find_spec("PyTorchUtils") is not None


def lightTheTorchInstalled():
    return _installedVersion("light-the-torch") is not None


def installPyTorchExtension():
    """Install the PyTorch extension from the Extensions server without Slicer's own "install?" and "restart?"
    questions (the user answered KnowledgeSAM's one question), then restart Slicer (which still offers to save
    a modified scene). Returns the ``installer.Outcome`` to show if Slicer does not restart."""
    import slicer

    from KnowledgeSAMSlicer.installer import Outcome

    manager = slicer.app.extensionsManagerModel()
    if not hasattr(manager, "installExtensionFromServer"):  # pragma: no cover - very old Slicer
        return Outcome(True, "Install the PyTorch extension from the Extensions Manager, restart Slicer, and retry.")
    interactive = manager.interactive
    manager.interactive = False
    try:
        installed = manager.installExtensionFromServer("PyTorch", False)  # restart=False: we restart below
    finally:
        manager.interactive = interactive
    if not installed:
        return Outcome(True, "Installing the PyTorch extension failed; install it from the Extensions Manager, "
                             "restart Slicer and press 'Install dependencies' again.")
    slicer.util.restart()
    return Outcome(False, "The PyTorch extension was installed. Restart Slicer, then press 'Install dependencies' "
                          "to finish (you will not be asked again).", restartRequired=True)
