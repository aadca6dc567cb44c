"""The sacred experiment, ViLT-style (``vilt/config.py``): it lives in the package, :mod:`emmcil.config` (the named
configs, every key with its comment, the checks), so that an installed package runs it too; this file keeps
``from config import ex`` working in a clone."""
from emmcil.config import *  # noqa: F401,F403
from emmcil.config import ex  # noqa: F401
