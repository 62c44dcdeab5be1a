"""BENCHMARKS.md and benchmarks.json from the sections of one `jepa bench` run."""
from __future__ import annotations

import json
import os

from jepa.bench.common import Section, Target, fmt


def _table(columns: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _value(x: float, unit: str) -> str:
    """1.6 'x' -> '1.6x'; 0.38 'of peak' -> '38% of peak'."""
    if unit == "of peak":
        return f"{100 * x:.0f}% of peak"
    return f"{x:.3g}{unit}" if len(unit) <= 1 else f"{x:.3g} {unit}"


def markdown(run: dict, sections: list[Section], errors: dict[str, str]) -> str:
    m = run["machine"]
    peak = run["peak"]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{run['command']}` on {m['date']} ({'quick: tiny config only' if run['quick'] else 'full'}). "
        "Every figure that matters is a ratio of two medians measured side by side in this one run (repeats "
        "interleaved, after warm-up); absolute times move with the machine's load.",
        "",
        *([f"**Warning**: the machine was busy when this run started (load average "
           f"{m['load_average_start'][0]:.1f} on {m['cpus_usable']} CPUs). PyTorch's spinning OpenMP threads lose far "
           "more than JAX's to other work, so these ratios flatter the project; rerun on an idle machine.", ""]
          if run.get("busy_at_start") else []),
        "## Machine",
        "",
        *_table(["what", "value"], [
            ["CPU", f"{m['cpu']} ({', '.join(m['cpu_flags']) or 'flags unknown'})"],
            ["cores", f"{m['logical_cpus']} logical, {m['cpus_usable']} usable by this process"],
            ["threads", f"{run['threads']} (torch.set_num_threads; XLA's CPU client uses one thread per usable core)"
             + (f"; env {m['thread_env']}" if m["thread_env"] else "")],
            ["f32 matmul peak", f"{peak['peak_flops'] / 1e9:.0f} GFLOP/s (n={peak['n']}: JAX "
             f"{peak['jax_flops'] / 1e9:.0f}, PyTorch {peak['torch_flops'] / 1e9:.0f}); MFU and % of peak below "
             "are against the faster of the two"],
            *([["bf16 matmul peak", f"{peak['bf16_peak_flops'] / 1e9:.0f} GFLOP/s (bfloat16 operands, n={peak['n']}: "
                f"JAX {peak['bf16_jax_flops'] / 1e9:.0f} with float32 accumulation, PyTorch "
                f"{peak['bf16_torch_flops'] / 1e9:.0f}); the mixed-precision section's % of peak is against it"]]
              if "bf16_peak_flops" in peak else []),
            ["load average", f"{', '.join(f'{x:.1f}' for x in m['load_average_start'])} at the start; "
             f"{', '.join(f'{x:.1f}' for x in run['load_average_end'])} at the end"],
            ["software", "Python " + m["python"] + "; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)],
            ["devices", ", ".join(m["jax_devices"])],
            ["timing", f"{run['timing']['warmup']} warm-up, median of {run['timing']['repeats']} repeats"],
            ["wall time", f"{run['wall_s']:.0f} s"],
        ]),
        "",
    ]
    targets: list[Target] = [t for s in sections for t in s.targets]
    if targets or errors:
        met = sum(t.met for t in targets)
        lines += ["## Targets", "", f"{met} of {len(targets)} met.", ""]
        lines += _table(["target", "measured", "goal", "met", "XLA:CPU ceiling"],
                        [[t.name, _value(t.value, t.unit), ">= " + _value(t.goal, t.unit), "yes" if t.met else "**no**",
                          "-" if t.ceiling is None else _value(t.ceiling, t.unit)
                          + (" (goal above it)" if t.ceiling < t.goal else "")] for t in targets])
        above = [t for t in targets if t.ceiling is not None and t.ceiling < t.goal]
        lines += ["", "XLA:CPU ceiling: the largest value any XLA:CPU float32 program could reach here: for the "
                  "forward and the step, from the time XLA takes for the program's matrix products alone at their "
                  "own shapes; for planning, from the re-plan's FLOPs at the machine's matmul peak (see each "
                  "section)." + (f" Goals above their ceiling: {len(above)} of {len(targets)}." if above else "")]
        lines.append("")
    for key, err in errors.items():
        lines += [f"## {key}: failed", "", "```", err.rstrip(), "```", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.rows:
            lines += _table(s.columns, s.rows) + [""]
        for note in filter(None, s.notes):
            lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def write(out_dir: str, run: dict, sections: list[Section], errors: dict[str, str]) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    md_path = os.path.join(out_dir, "BENCHMARKS.md")
    json_path = os.path.join(out_dir, "benchmarks.json")
    with open(md_path + ".tmp", "w") as f:
        f.write(markdown(run, sections, errors))
    with open(json_path + ".tmp", "w") as f:
        json.dump({**run, "sections": [s.to_dict() for s in sections], "errors": errors}, f, indent=1, default=str)
    os.replace(md_path + ".tmp", md_path)
    os.replace(json_path + ".tmp", json_path)
    return md_path, json_path
