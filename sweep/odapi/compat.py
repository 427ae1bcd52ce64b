"""Make the OD API run on TensorFlow 2.15.

tf-slim 1.1.0 (the OD API's TFRecord decoder uses it) calls ``control_flow_ops.case`` and
``control_flow_ops.cond``, which TF 2.13 moved to ``control_flow_case`` and ``cond``. Without
this, training fails at its first batch. Every process that trains, evaluates or exports calls
``patch()`` before importing ``object_detection`` modules that use TensorFlow.

``seed_legacy_functions()`` mends a second gap, for seeded training: the OD API maps its input
pipeline (decoding, augmentation) with ``map_with_legacy_function``, whose function graph does
not inherit the global seed that ``tf.random.set_seed`` sets, so the augmentations' random ops
ignore the seed (and TensorFlow's op determinism refuses them outright).

``trace_od_api_as_written()`` is for speed: AutoGraph rewrites every OD API function a
``tf.function`` calls (thousands of them in a train step) before tracing it, the largest part
of a trial's fixed cost on the CPU. The OD API is written for graph mode (``tf.cond``,
``tf.while_loop``), so its functions trace as they are; only the top-level train and eval
steps (their ``for _ in tf.range(...)``) need AutoGraph, and they keep it.
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


def seed_legacy_functions() -> None:
    """Give every legacy ``Defun`` function graph (the OD API's ``map_with_legacy_function``
    input maps) its outer graph's seed or else the global seed, as ``tf.function`` graphs get
    it, so its random ops take their seeds from it in the order they are built. Without a
    global seed nothing changes."""
    from tensorflow.python.eager import context
    from tensorflow.python.framework import function

    init = function._FuncGraph.__init__  # noqa: SLF001 - the one place the gap can be mended
    if getattr(init, "_sweep_seeded", False):
        return

    def seeded_init(self, *args, **kwargs) -> None:  # noqa: ANN001, ANN002, ANN003
        init(self, *args, **kwargs)
        if self.seed is None:
            # Built under the global graph of eager code (tf.data's legacy path), whose own seed
            # tf.random.set_seed leaves unset: take the eager context's.
            outer = self._outer_graph.seed  # noqa: SLF001
            self.seed = outer if outer is not None else context.global_seed()

    seeded_init._sweep_seeded = True  # type: ignore[attr-defined]
    function._FuncGraph.__init__ = seeded_init  # noqa: SLF001


def trace_od_api_as_written() -> None:
    """AutoGraph leaves ``object_detection`` functions unconverted when a ``tf.function`` (or a
    ``tf.data`` map) calls them, as it leaves TensorFlow's and Keras's own; a function decorated
    with ``tf.function`` is still converted (AutoGraph converts what the user asked for).
    Idempotent."""
    from tensorflow.python.autograph.core import config

    rule = config.DoNotConvert("object_detection")
    if not any(getattr(r, "_prefix", None) == "object_detection"
               for r in config.CONVERSION_RULES):
        config.CONVERSION_RULES = (rule, *config.CONVERSION_RULES)
