"""``python -m KnowledgeSAMLib.cli`` (e.g. under ``torchrun -m``) runs the ``knowledgesam`` command."""

import sys

from . import main

sys.exit(main())
