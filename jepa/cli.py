"""The `jepa` command: a thin dispatcher to each subcommand's `main(argv)`.

Subcommands import lazily so `jepa --help` is instant and each tool only pays for what it uses. Mistakes in what a
user gave (a bad override or config value, a missing or malformed file, a wrong bundle) are reported here in one
line on stderr with exit code 2; `--debug` anywhere on the command line shows the traceback instead.
"""
from __future__ import annotations

import importlib
import sys
import traceback
from typing import Callable

# name -> (module, help). Each module exposes `main(argv: list[str]) -> int | None`.
COMMANDS = {
    "pretrain": ("jepa.train.pretrain", "pretrain a V-JEPA 2 encoder + predictor (--config, --workdir)"),
    "train-ac": ("jepa.train.ac", "train the action-conditioned predictor on robot episodes"),
    "probe": ("jepa.probe.run", "frozen-encoder evaluation: a grid of attentive probes (--config configs/probe/..)"),
    "convert": ("jepa.convert", "import PyTorch / transformers V-JEPA 2 checkpoints into orbax"),
    "data": ("jepa.data.cli", "dataset tools: `shard` (video lists -> ArrayRecord), `build` (tfds builders)"),
    "collect": ("planning.collect", "collect robot episodes from a MuJoCo task into an RLDS dataset"),
    "plan": ("planning.plan", "plan toward a goal image on one episode (closed-loop CEM), with a GIF"),
    "eval-planner": ("planning.evaluate", "evaluate goal-image planning against baselines (--config configs/plan/..)"),
    "bench": ("jepa.bench.run", "benchmarks against the PyTorch reference, side by side -> BENCHMARKS.md (--quick)"),
}

# What a user's input can raise: reported in one line. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, KeyError, OSError)
USER_ERROR_EXIT = 2


def _usage() -> str:
    lines = ["usage: jepa [--debug] <command> [args...]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "--debug: show the traceback of an error instead of its one-line message"]
    return "\n".join(lines)


def error_line(e: BaseException) -> str:
    """An exception as one line: its message (a KeyError's without the quotes repr adds), newlines folded."""
    msg = e.args[0] if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
    if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
        msg = f"{msg}: {e.filename}"
    msg = "; ".join(part.strip() for part in msg.strip().splitlines() if part.strip()) or type(e).__name__
    return msg


def run_reporting_errors(prog: str, fn: Callable[[list[str]], int | None], argv: list[str]) -> int:
    """Runs `fn(argv)`; a user error becomes `prog: error: <one line>` on stderr and exit code 2, unless `--debug`
    is in argv (it is removed before `fn` sees it), which lets the traceback through."""
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if debug:
        return int(fn(argv) or 0)
    try:
        return int(fn(argv) or 0)
    except USER_ERRORS as e:
        print(f"{prog}: error: {error_line(e)} (--debug shows the traceback)", file=sys.stderr)
        return USER_ERROR_EXIT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = [a for a in argv if a != "--debug"]
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"jepa: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run_reporting_errors(f"jepa {name}", module.main, rest + (["--debug"] if debug else []))


if __name__ == "__main__":
    sys.exit(main())
