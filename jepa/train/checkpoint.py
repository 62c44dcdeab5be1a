"""Training checkpoints: model/optimizer/EMA/step/RNG state + the data iterator, with orbax.

One orbax CheckpointManager per run directory, items:
  state: the train-state pytree (StandardSave: sharded arrays written by every host, restored into an abstract,
         already-sharded target);
  data:  the grain iterator state of every process (grain's own orbax handler: process_i-of-n.json).
Saves are asynchronous; the last `keep` are kept; `save(..., force=True)` is used on SIGTERM before exiting.

Resuming (`restore`) takes the newest checkpoint that reads back whole. A newer one that does not (a truncated
array file, a garbled iterator state: a crash or a full disk during a save) is reported in one warning line and
moved aside to `<directory>_unreadable/<step>` (kept for inspection; the run will save that step again). When
none is readable, `CheckpointError` says so and nothing is moved or deleted.
"""
from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath


class CheckpointError(ValueError):
    """No checkpoint of a run directory can be restored."""


def _reason(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    first = (lines[0] if lines else "").split(" See full TensorStore details")[0]
    return f"{type(e).__name__}: {first[:300]}" if first else type(e).__name__


class Checkpointer:
    def __init__(self, directory: str, *, keep: int = 3, every: int = 1000, async_save: bool = True):
        self.directory = epath.Path(directory).resolve()
        self.every = every
        self._last_saved = None
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
        """Saves `step` (asynchronously); a step saved already is not saved again (SIGTERM right after a periodic
        save asks for the same step twice)."""
        if step == self._last_saved:
            return False
        self._last_saved = step
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, abstract_state: Any, data_iter=None, step: int | None = None) -> tuple[int, Any]:
        """Restores into `abstract_state` (ShapeDtypeStructs carrying shardings) and, in place, the data iterator.

        With `step=None`, the newest readable checkpoint: unreadable newer ones are reported (one warning line
        each) and moved aside; `CheckpointError` if none is readable (then nothing is moved)."""
        if step is not None:
            return step, self._restore(step, abstract_state, data_iter)
        steps = sorted(self.manager.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        failed = []
        for s in steps:
            try:
                state = self._restore(s, abstract_state, data_iter)
            except Exception as e:  # whatever a damaged file raises (tensorstore, JSON, msgpack, orbax, OS errors)
                failed.append((s, _reason(e)))
                continue
            for bad, why in failed:
                moved = self._move_aside(bad)
                print(f"warning: checkpoint step {bad} in {self.directory} is unreadable ({why}); resuming from step "
                      f"{s}; the unreadable one was moved to {moved}", file=sys.stderr, flush=True)
            if failed:
                self.manager.reload()
            return s, state
        raise CheckpointError(f"none of the {len(steps)} checkpoints in {self.directory} is readable (nothing was "
                              f"moved or deleted): " + "; ".join(f"step {s}: {why}" for s, why in failed))

    def _restore(self, step: int, abstract_state: Any, data_iter) -> Any:
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def _move_aside(self, step: int) -> epath.Path:
        """Moves an unreadable step out of the manager's directory (process 0; all processes wait for it)."""
        target = self.directory.parent / f"{self.directory.name}_unreadable" / str(step)
        if target.exists():
            target = target.parent / f"{step}.{time.strftime('%Y%m%d-%H%M%S')}"
        if jax.process_index() == 0:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.directory / str(step)), str(target))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"checkpoint_move_aside_{step}")
        return target

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
