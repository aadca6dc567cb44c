"""``python -m emmcil SUB-COMMAND ...``: the ``emmcil`` command without installing it (:mod:`emmcil.cli`)."""
import sys

from emmcil.cli import main

if __name__ == "__main__":
    sys.exit(main())
