"""Native extension build only; metadata lives in pyproject.toml.

The native batched-CKA extension arrives with the engine issue (#4). Until then this installs the
pure-Python package. CNR_FAST_SKIP_NATIVE=1 will keep giving a pure-Python install.
"""

from setuptools import setup

setup()
