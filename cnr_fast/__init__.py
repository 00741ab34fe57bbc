"""cnr-fast: Class-Specific Neuron Reset, its baselines and its audit.

Public API. Importing this package never initialises CUDA and never imports triton or faiss;
heavy pieces load on first use.
"""

from .config import RunConfig
from .errors import UserError

__version__ = "0.1.0"



def unlearn(model, data, forget, method="cnr", **kw):
    """Remove classes from any nn.Module classifier: see cnr_fast.api.unlearn."""
    from .api import unlearn as _unlearn

    return _unlearn(model, data, forget, method, **kw)


def audit_model(model, *, original, data, forget, **kw):
    """Audit an unlearned classifier against its original: see cnr_fast.api.audit_model.
    (Not `cnr_fast.audit`: that name is the audit subpackage.)"""
    from .api import audit_model as _audit

    return _audit(model, original=original, data=data, forget=forget, **kw)


def compare(build, data, forget, methods=None, **kw):
    """Compare unlearning methods on your own model, data and training recipe: see cnr_fast.api.compare."""
    from .api import compare as _compare

    return _compare(build, data, forget, methods, **kw)


__all__ = ["RunConfig", "UserError", "__version__", "audit_model", "compare", "unlearn"]
