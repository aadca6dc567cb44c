"""Everything about the package is in pyproject.toml; this file stays for tools that still call ``setup.py``."""
from setuptools import setup

setup()
