"""cnr-fast: Class-Specific Neuron Reset, its baselines and its audit.

Public API. Importing this package never initialises CUDA and never imports triton or faiss;
heavy pieces load on first use.
"""

from .config import RunConfig
from .errors import UserError

__version__ = "0.1.0"



def unlearn(model, data, forget, method="cnr", **kw):
    """Remove classes from any nn.Module classifier: see cnr_fast.api.unlearn."""
    from . import api

    try:
        return api.unlearn(model, data, forget, method, **kw)
    except UserError as e:  # the arguments named as this call takes them, not as CLI flags
        raise api.in_python_terms(e) from None


def audit_model(model, *, original, data, forget, **kw):
    """Audit an unlearned classifier against its original: see cnr_fast.api.audit_model.
    (Not `cnr_fast.audit`: that name is the audit subpackage.)"""
    from . import api

    try:
        return api.audit_model(model, original=original, data=data, forget=forget, **kw)
    except UserError as e:
        raise api.in_python_terms(e) from None


def compare(build, data, forget, methods=None, **kw):
    """Compare unlearning methods on your own model, data and training recipe: see cnr_fast.api.compare."""
    from . import api

    try:
        return api.compare(build, data, forget, methods, **kw)
    except UserError as e:
        raise api.in_python_terms(e) from None


__all__ = ["RunConfig", "UserError", "__version__", "audit_model", "compare", "unlearn"]
