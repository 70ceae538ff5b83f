"""Helpers of the KnowledgeSAM Slicer module and effect that are not the module itself.

``environment`` (can the library be imported here, and why not; the mode and axis choices),
``dependencies`` (the explicit "Install dependencies" action), ``worker`` (the one persistent inference
thread, and the ``JobMonitor`` the panel and the effect follow it with), ``devices`` (what to offer in the
device combo), ``views`` (slice views -> axis and slice index), ``segmentlist`` (the panel's checklist of
reference segments), ``selftest`` (the in-Slicer self-tests) and ``sampledata`` (the phantom registered
with Sample Data). Only ``views``, ``dependencies``, ``sampledata``, ``segmentlist`` and ``selftest`` touch
``slicer.app``/Qt at import or at run time; the others can be tested with plain pytest. They reach the
library through ``KnowledgeSAMLib.mrml`` only (see docs/dev/LAYERS.md).
"""
