"""Helpers of the KnowledgeSAM Slicer module and effect that are not the module itself.

The Qt-free presenters hold the front-ends' behaviour, so it is tested on slicer-core with plain pytest:
``panel`` (the module panel: Apply, the finished run, Cancel, Undo, scene close, module exit) and
``editoreffect`` (the Segment Editor effect: preview, apply through the editor, cancel). ``worker`` follows a
run in the inference process (``KnowledgeSAMLib.mrml.WorkerProcess``) from the main thread (``JobMonitor``);
``standins`` are stand-in engines that process can import. ``installer`` and ``dependencies``: the explicit
"Install dependencies" action (one confirmation, installers as background processes). ``environment`` (can the
library be imported here, and why not; the mode and axis choices), ``devices`` (what the device combo offers;
torch only when the list is opened), ``views`` (slice views -> axis and slice index), ``segmentlist`` (the
panel's checklist of reference segments), ``selftest`` (the in-Slicer self-tests) and ``sampledata`` (the
phantom registered with Sample Data). Only ``segmentlist``, ``selftest`` and the Qt runner of ``installer``
need Qt. They reach the library through ``KnowledgeSAMLib.mrml`` only (see docs/dev/LAYERS.md).
"""
