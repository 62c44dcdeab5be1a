"""Multi-host initialisation from environment variables.

Set, on every process:
  JEPA_COORDINATOR=host:port   (or JAX_COORDINATOR_ADDRESS)   address of process 0's coordinator
  JEPA_NUM_PROCESSES=N         (or JAX_NUM_PROCESSES)
  JEPA_PROCESS_ID=i            (or JAX_PROCESS_ID)
On TPU pod slices and SLURM clusters, `JEPA_DISTRIBUTED=auto` lets `jax.distributed.initialize()` discover them.
Nothing set: single process. CPU multi-process runs use gloo collectives.
"""
from __future__ import annotations

import os

import jax

_done = False


def _env(*names: str) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


def initialize() -> None:
    global _done
    if _done:
        return
    coord = _env("JEPA_COORDINATOR", "JAX_COORDINATOR_ADDRESS")
    auto = os.environ.get("JEPA_DISTRIBUTED", "") == "auto"
    if coord:
        n = int(_env("JEPA_NUM_PROCESSES", "JAX_NUM_PROCESSES") or 0)
        pid = _env("JEPA_PROCESS_ID", "JAX_PROCESS_ID")
        if n < 1 or pid is None:
            raise ValueError("JEPA_COORDINATOR is set: JEPA_NUM_PROCESSES and JEPA_PROCESS_ID must be set too")
        if n > 1 and _env("JAX_PLATFORMS", "JAX_PLATFORM_NAME") in (None, "cpu"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coord, num_processes=n, process_id=int(pid))
    elif auto:
        jax.distributed.initialize()
    _done = True


def is_main() -> bool:
    return jax.process_index() == 0
