"""Helpers for tests that run a CLI in a subprocess and interrupt it, and read what the run logged."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


def sigterm_after_logged_steps(cmd: list[str], *, cwd: str, env: dict, metrics: Path, steps: int = 2,
                               timeout: float = 300) -> tuple[int, str, str]:
    """Start `cmd`, wait until its metrics.jsonl has `steps` rows, send SIGTERM; (return code, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < steps):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def logged_losses(workdir, name: str = "metrics.jsonl") -> dict[int, float]:
    """step -> loss of a run's metrics file; a step logged twice (a resumed run redoes the steps after its
    checkpoint) keeps the last."""
    rows = {}
    with open(os.path.join(workdir, name)) as f:
        for line in f:
            r = json.loads(line)
            rows[r["step"]] = r["loss"]
    return rows


def stop_after(n: int):
    """A stand-in for jepa.train.checkpoint.StopSignal that requests the stop after the n-th step (a SIGTERM at a
    known point); monkeypatch a training module's `StopSignal` with it."""

    class StopAfter:
        def __init__(self):
            self.checks = 0

        def any_process_requested(self) -> bool:
            self.checks += 1
            return self.checks == n

        def restore(self):
            pass

    return StopAfter
