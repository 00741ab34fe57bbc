"""Run the Triton kernels on CPU through the interpreter when there is no GPU.

triton.jit reads TRITON_INTERPRET when a kernel is decorated, so this must happen before any
cnr_fast.ops._triton module is imported (conftest files are imported before the test modules).
On a CUDA machine it is left alone: there the same tests run the compiled kernels.
The dispatch never picks the interpreter automatically (only with CNR_FAST_BACKEND=triton), so
setting it here does not slow down other tests of the session that call the ops on CPU.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
