"""The `jepa` command: a thin dispatcher to each subcommand's `main(argv)`.

Subcommands import lazily so `jepa --help` is instant and each tool only pays for what it uses.
"""
from __future__ import annotations

import importlib
import sys

# name -> (module, help). Each module exposes `main(argv: list[str]) -> int | None`.
COMMANDS = {
    "pretrain": ("jepa.train.pretrain", "pretrain a V-JEPA 2 encoder + predictor (--config, --workdir)"),
    "train-ac": ("jepa.train.ac", "train the action-conditioned predictor on robot episodes"),
    "probe": ("jepa.probe.train", "train an attentive probe on a frozen encoder"),
    "convert": ("jepa.convert", "import PyTorch / transformers V-JEPA 2 checkpoints into orbax"),
    "data": ("jepa.data.cli", "dataset tools: `shard` (video lists -> ArrayRecord), `build` (tfds builders)"),
    "collect": ("planning.collect", "collect robot episodes from a MuJoCo task into an RLDS dataset"),
    "plan": ("planning.plan", "plan toward a goal image on one episode (closed-loop CEM), with a GIF"),
    "eval-planner": ("planning.evaluate", "evaluate goal-image planning against baselines (--config configs/plan/..)"),
}


def _usage() -> str:
    lines = ["usage: jepa <command> [args...]", "", "commands:"]
    lines += [f"  {name:<13} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"jepa: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
