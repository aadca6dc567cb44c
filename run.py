"""Run (or resume) a class-incremental experiment from a clone: ``python run.py with demo``, ViLT-style.

The experiment and its command line are :mod:`emmcil.train` (exit status, refusals, stops) and :mod:`emmcil.config`
(named configs and keys).
"""
import sys
import warnings

# sacred 0.8 imports pkg_resources, which setuptools deprecates: a warning about sacred that no run can act on
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from emmcil.train import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
