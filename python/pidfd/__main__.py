"""``python -m pidfd``: the same as the ``pidfd`` command."""

from pidfd._cli import console

if __name__ == "__main__":
    console()
