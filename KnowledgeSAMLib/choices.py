"""The words a user picks from, defined once for every front-end: modes, axes, devices, post-processing.

The CLI's ``choices=``, the Slicer panel's and the effect's combo boxes, the batch script's arguments and
the engine's input checks all read these tuples, so a new mode is added here and nowhere else (its
runner goes into ``infer/modes.py``; see docs/dev/LAYERS.md).

Why a separate, dependency-free module: the Slicer module reads it while Slicer imports the module (its
parameter node declares ``Choice(MODES)``), also on Slicer 5.8, whose Python 3.9 cannot import the rest of
the library. Keep it plain: no imports, no ``X | Y`` annotations (``Testing/test_import_graph.py`` and
``Testing/test_slicer_module_static.py`` check it).
"""

MODES = ("auto", "anchor", "propagate", "volume")
# Slicer's default views in order: Red, Yellow, Green.
AXES = ("axial", "sagittal", "coronal")
DEVICES = ("auto", "cpu", "cuda", "mps")  # "cuda:1" names a GPU; the prefix must be one of these
DEFAULT_MODE = "auto"
DEFAULT_AXIS = "axial"
DEFAULT_DEVICE = "auto"
DEFAULT_MODEL = "default"  # the embedded default model (KnowledgeSAMLib.model.registry)
DEFAULT_PRESET = "auto"  # intensity preset; the named presets are KnowledgeSAMLib.data.intensity.PRESETS
DEFAULT_BATCH_SIZE = 8
# Volume mode fuses the top-k reference slices per target slice; each costs one decoder pass per slice and
# structure, and k = 1 has scored best with every model (EngineOptions). Front-ends cap what users ask.
MAX_TOP_K = 8
# What runs the image encoder on the CPU (KnowledgeSAMLib.infer.cpu_runtime): auto = the fastest installed
# runtime where it pays, else PyTorch
CPU_RUNTIMES = ("auto", "openvino", "onnxruntime", "torch")
DEFAULT_CPU_RUNTIME = "auto"

# EngineOptions values a front-end offers (KnowledgeSAMLib.infer.request.EngineOptions)
OVERLAPS = ("auto", "layers", "argmax")
CONTESTED = ("smaller", "probability")

__all__ = ["MODES", "AXES", "DEVICES", "DEFAULT_MODE", "DEFAULT_AXIS", "DEFAULT_DEVICE",
           "DEFAULT_MODEL", "DEFAULT_PRESET", "DEFAULT_BATCH_SIZE", "MAX_TOP_K", "OVERLAPS", "CONTESTED",
           "CPU_RUNTIMES", "DEFAULT_CPU_RUNTIME"]
