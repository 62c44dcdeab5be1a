"""Training checkpoints: model/optimizer/EMA/step/RNG state + the data iterator, with orbax.

One orbax CheckpointManager per run directory, items:
  state: the train-state pytree (StandardSave: sharded arrays written by every host, restored into an abstract,
         already-sharded target);
  data:  the grain iterator state of every process (grain's own orbax handler: process_i-of-n.json).
Saves are asynchronous; the last `keep` are kept; `save(..., force=True)` is used on SIGTERM before exiting.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
    def __init__(self, directory: str, *, keep: int = 3, every: int = 1000, async_save: bool = True):
        self.directory = epath.Path(directory).resolve()
        self.every = every
        opts = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=1, create=True,
                                            enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=opts,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()},
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    def save(self, step: int, state: Any, data_iter=None, *, force: bool = False) -> bool:
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: Any, data_iter=None, step: int | None = None) -> tuple[int, Any]:
        """Restores into `abstract_state` (ShapeDtypeStructs carrying shardings) and, in place, the data iterator."""
        step = self.manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return step, out["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


class StopSignal:
    """Turns SIGTERM (preemption) into a flag the training loop checks after each step."""

    def __init__(self, signals=(signal.SIGTERM,)):
        self.flag = threading.Event()
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            for s in signals:
                self._old[s] = signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.flag.set()

    @property
    def requested(self) -> bool:
        return self.flag.is_set()

    def any_process_requested(self) -> bool:
        """All processes agree to stop if any got the signal (so they all join the final save)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        import numpy as np

        flags = multihost_utils.process_allgather(np.array([self.requested], dtype=np.int32))
        return bool(np.asarray(flags).any())

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)
