"""User-facing errors: one clear line that names the file and the problem.

The CLI prints ``knowledgesam: error: <message>`` and exits non-zero for these; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class KnowledgeSAMError(Exception):
    """Bad input or an impossible request; the message is shown to the user as is."""


class InputError(KnowledgeSAMError):
    """A file is missing, unreadable, corrupt, or incompatible with the others."""


class CancelledError(KnowledgeSAMError):
    """The user cancelled a long run; nothing was written."""


class WeightsError(KnowledgeSAMError):
    """Model weights are missing, have the wrong hash, or do not fit the configuration."""
