"""The explicit "Install dependencies" action: what is missing, one confirmation, then install.

Rules (installing PyTorch is the first cause of failure of AI extensions, SLICER_CONVENTIONS.md §4):

* nothing is installed at import, in ``setup()`` or without the user's click;
* PyTorch comes from the PyTorch extension (``PyTorchUtils``, which picks the CUDA build that matches
  the driver); if that extension is missing, it is installed from the Extensions server and Slicer
  must restart;
* the other packages are installed with ``slicer.packaging.pip_ensure`` (Slicer >= 5.12) or
  ``slicer.util.pip_install`` (older), on the main thread, with a constraints file that pins the
  versions of Slicer's own numpy, SimpleITK, VTK, requests (and the installed torch), so pip fails with a
  clear message rather than replacing them.

The planning part (:func:`missingRequirements`, :func:`protectedConstraints`, :func:`installPlanText`)
does not need Slicer and is tested with plain pytest.
"""

import importlib.metadata
import os
import re
import tempfile

__all__ = [
    "PROTECTED_PACKAGES", "TORCH_REQUIREMENT", "REQUESTER", "readRequirements", "missingRequirements",
    "protectedConstraints", "installPlanText", "InstallAborted", "RestartRequired", "installDependencies",
]

REQUESTER = "KnowledgeSAM"
TORCH_REQUIREMENT = ">=2.1"
# Packages Slicer ships (or that another extension installed) that our requirements must never replace.
PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk", "requests", "torch", "scipy", "pydicom")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class InstallAborted(Exception):
    """The user declined, or an installer reported a failure (message says which)."""


class RestartRequired(Exception):
    """An extension was installed; Slicer must restart before the installation can continue."""


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
    return not _satisfied("torch" + TORCH_REQUIREMENT)


def protectedConstraints():
    """``name==version`` for each protected package that is installed (a pip constraints file's lines)."""
    lines = []
    for name in PROTECTED_PACKAGES:
        version = _installedVersion(name)
        if version is not None:
            lines.append(f"{name}=={version}")
    return lines


def installPlanText(missing, needTorch, needPyTorchExtension):
    """What will happen, for the one confirmation dialog (empty string: nothing to do)."""
    steps = []
    if needTorch and needPyTorchExtension:
        steps.append("the PyTorch extension from the Slicer Extensions server (Slicer restarts afterwards; "
                     "press 'Install dependencies' again after the restart)")
    elif needTorch:
        steps.append(f"PyTorch (torch{TORCH_REQUIREMENT}) through the PyTorch extension, which picks the build "
                     "that matches your GPU driver (a download of up to a few GB)")
    if missing:
        steps.append("Python packages: " + ", ".join(missing))
    if not steps:
        return ""
    return ("KnowledgeSAM will install:\n\n- " + "\n- ".join(steps) +
            "\n\nSlicer's own numpy, SimpleITK, VTK and requests are kept as they are. Continue?")


def _pyTorchUtilsLogic():
    try:
        import PyTorchUtils
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


def _installPyTorchExtension():
    import slicer

    manager = slicer.app.extensionsManagerModel()
    if hasattr(manager, "installExtensionFromServer"):
        if not manager.installExtensionFromServer("PyTorch"):
            raise InstallAborted("Installing the PyTorch extension failed; install it from the Extensions Manager.")
    else:  # pragma: no cover - very old Slicer
        raise InstallAborted("Install the PyTorch extension from the Extensions Manager, restart Slicer, and retry.")
    if slicer.util.confirmYesNoDisplay("The PyTorch extension was installed. Restart Slicer now?"):
        slicer.util.restart()
    raise RestartRequired("Restart Slicer, then press 'Install dependencies' again to finish.")


def _writeConstraints():
    handle, path = tempfile.mkstemp(prefix="KnowledgeSAM-constraints-", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write("\n".join(protectedConstraints()) + "\n")
    return path


def _pipInstall(missing, constraintsPath):
    import slicer

    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(missing, constraints=constraintsPath, prompt_install=False, requester=REQUESTER)
    else:
        slicer.util.pip_install(["-c", constraintsPath] + list(missing))


def installDependencies(requirementsPath, askConfirmation=True):
    """Install what is missing (main thread only). Returns True when everything is now satisfied.

    Raises :class:`InstallAborted` (declined or failed) or :class:`RestartRequired`."""
    import slicer

    missing = missingRequirements(readRequirements(requirementsPath))
    needTorch = torchMissing()
    torchLogic = _pyTorchUtilsLogic() if needTorch else None
    plan = installPlanText(missing, needTorch, needTorch and torchLogic is None)
    if not plan:
        return True
    if askConfirmation and not slicer.app.testingEnabled():
        if not slicer.util.confirmOkCancelDisplay(plan, windowTitle="KnowledgeSAM dependencies"):
            raise InstallAborted("Installation cancelled; nothing was installed.")
    if needTorch:
        if torchLogic is None:
            _installPyTorchExtension()
        if torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT) is None:
            raise InstallAborted("PyTorch was not installed (see the Python console for the installer's messages).")
    if missing:
        constraintsPath = _writeConstraints()  # written after torch so that torch is pinned too
        try:
            _pipInstall(missing, constraintsPath)
        finally:
            os.remove(constraintsPath)
    still = missingRequirements(readRequirements(requirementsPath)) + (["torch"] if torchMissing() else [])
    if still:
        raise InstallAborted("Still missing after installation: " + ", ".join(still) +
                             ". Restart Slicer and try again; see the Python console for pip's messages.")
    return True
