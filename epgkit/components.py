"""Imports every built-in component so that its registration with gin has happened."""

import epgkit.experiment  # noqa: F401
import epgkit.inner_loop  # noqa: F401
import epgkit.losses  # noqa: F401
import epgkit.policies  # noqa: F401
import epgkit.strategies  # noqa: F401
