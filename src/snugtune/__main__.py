"""``python -m snugtune`` (also what ``torchrun -m snugtune`` runs)."""

import sys

from snugtune.cli import main

if __name__ == "__main__":
    sys.exit(main())
