"""Make the OD API run on TensorFlow 2.15.

tf-slim 1.1.0 (the OD API's TFRecord decoder uses it) calls ``control_flow_ops.case`` and
``control_flow_ops.cond``, which TF 2.13 moved to ``control_flow_case`` and ``cond``. Without
this, training fails at its first batch. Every process that trains, evaluates or exports calls
``patch()`` before importing ``object_detection`` modules that use TensorFlow.
"""

from __future__ import annotations

import os

_patched = False


def patch() -> None:
    """Alias the moved functions back; idempotent and cheap after the first call."""
    global _patched
    if _patched:
        return
    # Quiet TF's C++ start-up chatter (CUDA stubs on CPU machines) unless the user asked for it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tensorflow.python.ops import cond, control_flow_case, control_flow_ops

    if not hasattr(control_flow_ops, "case"):
        control_flow_ops.case = control_flow_case.case
    if not hasattr(control_flow_ops, "cond"):
        control_flow_ops.cond = cond.cond
    _patched = True
