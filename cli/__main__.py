"""``python -m zmeet_cli``: the ``zmeet`` command line (:func:`zmeet_cli.main.main`)."""

from __future__ import annotations

from .main import main

if __name__ == "__main__":  # pragma: no cover
    main()
