"""``python -m lightning_embviz`` runs the ``embviz`` command."""

import sys

from lightning_embviz.cli import main

if __name__ == "__main__":
    sys.exit(main())
