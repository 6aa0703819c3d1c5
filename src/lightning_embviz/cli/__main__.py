"""``python -m lightning_embviz.cli`` runs the ``embviz`` command."""

import sys

from lightning_embviz.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
