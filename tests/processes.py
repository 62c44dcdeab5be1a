"""Helpers for tests that run a CLI in a subprocess and interrupt it."""
from __future__ import annotations

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
