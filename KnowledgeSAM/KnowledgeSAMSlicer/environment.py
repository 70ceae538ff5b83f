"""Can ``KnowledgeSAMLib`` be imported in this Slicer, and if not, why (one line for the user).

Why a shim: an installed extension ships ``KnowledgeSAMLib/`` next to the scripted modules (importable),
but a developer running the module straight from a source checkout (``--additional-module-paths
KnowledgeSAM``) has the library one folder up. Slicer 5.8 bundles Python 3.9, which the library does
not support; the module must still load there and say so instead of failing with a traceback.
"""

import importlib.util
import os
import sys

MINIMUM_PYTHON = (3, 10)
MINIMUM_SLICER = "5.10"
LIBRARY = "KnowledgeSAMLib"


def ensureLibraryImportable(moduleFile):
    """Put the source checkout's root on ``sys.path`` when the library is not importable otherwise.

    ``moduleFile`` is the calling module's ``__file__`` (in ``<repo>/KnowledgeSAM/`` or
    ``<repo>/SegmentEditorKnowledgeSAM/`` or ``<repo>/KnowledgeSAM/Scripts/``). Returns the path added,
    or None."""
    if importlib.util.find_spec(LIBRARY) is not None:
        return None
    folder = os.path.dirname(os.path.abspath(moduleFile))
    for _ in range(3):
        folder = os.path.dirname(folder)
        if os.path.isfile(os.path.join(folder, LIBRARY, "__init__.py")):
            sys.path.insert(0, folder)
            importlib.invalidate_caches()
            return folder
    return None


class _NoChoices:
    """Stands in for ``KnowledgeSAMLib.choices`` when the library is missing: one empty choice each, so the
    panel and the effect still load and can say what is wrong (:func:`libraryUnavailableReason`)."""

    MODES = AXES = DEVICES = ("",)
    DEFAULT_MODE = DEFAULT_AXIS = DEFAULT_DEVICE = ""


def libraryChoices():
    """``KnowledgeSAMLib.choices``: the modes, axes and devices every front-end offers (one definition).

    Read while Slicer imports the module (the parameter node's ``Choice`` lists). That module has no imports
    and parses as Python 3.9, so it loads even in a Slicer whose Python the rest of the library does not
    support; only a broken installation gets the empty stand-in."""
    try:
        from KnowledgeSAMLib import choices
    except ImportError:
        return _NoChoices
    return choices


def libraryUnavailableReason():
    """None when ``KnowledgeSAMLib`` can be used here; otherwise a one-line explanation."""
    if sys.version_info[:2] < MINIMUM_PYTHON:
        return ("KnowledgeSAM needs Slicer {} or later (Python {}.{}+); this Slicer runs Python {}.{}. "
                "Please update Slicer.".format(MINIMUM_SLICER, MINIMUM_PYTHON[0], MINIMUM_PYTHON[1],
                                                 sys.version_info[0], sys.version_info[1]))
    if importlib.util.find_spec(LIBRARY) is None:
        return "The KnowledgeSAMLib package is missing from this installation of the extension; reinstall it."
    return None
