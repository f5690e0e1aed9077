"""``python -m epgkit.cli``: the ``epgkit`` command."""

from epgkit.cli import main

main()
