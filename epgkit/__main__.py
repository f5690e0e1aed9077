"""``python -m epgkit``: the ``epgkit`` command, for an environment whose scripts are not on PATH
(e.g. a cluster job that only knows its interpreter)."""

from epgkit.cli import main

main()
