"""cnr-fast: Class-Specific Neuron Reset, its baselines and its audit.

Public API. Importing this package never initialises CUDA and never imports triton or faiss;
heavy pieces load on first use.
"""

from .config import RunConfig
from .errors import UserError

__version__ = "0.1.0"

__all__ = ["RunConfig", "UserError", "__version__"]
