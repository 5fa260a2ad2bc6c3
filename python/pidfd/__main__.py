"""``python -m pidfd``: the same as the ``pidfd`` command."""

import sys

from pidfd._cli import main

if __name__ == "__main__":
    sys.exit(main())
