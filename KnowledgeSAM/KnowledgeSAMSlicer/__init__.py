"""Helpers of the KnowledgeSAM Slicer module and effect that are not the module itself.

``environment`` (can the library be imported here, and why not), ``dependencies`` (the explicit
"Install dependencies" action), ``worker`` (the one persistent inference thread), ``devices`` (what to
offer in the device combo), ``views`` (slice views -> axis and slice index) and ``sampledata`` (the
phantom registered with Sample Data). Only ``views``, ``dependencies`` and ``sampledata`` touch
``slicer.app``/Qt, and only inside functions, so the others can be tested with plain pytest.
"""
