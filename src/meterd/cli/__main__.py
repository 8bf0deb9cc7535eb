"""``python -m meterd.cli``: the ``meterd`` command."""

from meterd.cli.app import main

if __name__ == "__main__":  # pragma: no cover
    main()
