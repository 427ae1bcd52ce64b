"""What Ray sees of a machine: the GPUs an embedded Ray would use here, and the node (id, IP)
a trial runs on. One of the few modules that import Ray (lazily), with ``tune_backend`` and
``schedulers``."""

from __future__ import annotations

import os
import socket


def local_gpus() -> int:
    """GPUs an embedded Ray would see on this machine (Ray's own count, without starting it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        return int(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())
    except Exception:  # noqa: BLE001 - no driver, no library: no GPU Ray could use
        return 0


def this_node() -> tuple[str | None, str]:
    """(Ray node id, node IP) of the calling process (a trial's status shows where it ran)."""
    import ray

    try:
        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - status only
        pass
    return None, socket.gethostbyname(socket.gethostname())
