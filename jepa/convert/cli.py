"""`jepa convert`: import released V-JEPA 2 checkpoints into a model bundle (see `jepa.models.io`).

Reads a checkpoint (`jepa.convert.read`), converts it (`jepa.convert.original` / `jepa.convert.hf`) and writes a
bundle; every problem of the checkpoint is reported in one error and the command exits 1, writing nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Mapping

import numpy as np

from jepa.convert.hf import convert_hf, detect_hf_kind, hf_meta
from jepa.convert.layouts import PROBE_HEADS
from jepa.convert.original import convert_original, detect_original_kind
from jepa.convert.read import read_hf, read_original
from jepa.convert.statedict import ConversionError
from jepa.models.config import ENCODERS


def _count(tree) -> int:
    if isinstance(tree, Mapping):
        return sum(_count(v) for v in tree.values())
    return int(np.prod(tree.shape))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jepa convert", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--from", dest="source", required=True, choices=["original", "hf"],
                    help="original: Meta's .pt checkpoint; hf: a transformers directory (config.json + safetensors)")
    ap.add_argument("--src", required=True, help="checkpoint file (original) or model directory (hf)")
    ap.add_argument("--out", required=True, help="output bundle directory")
    ap.add_argument("--kind", choices=["pretrain", "ac", "classifier"], default=None,
                    help="what the checkpoint holds (default: detected from its keys)")
    ap.add_argument("--which", choices=["target_encoder", "encoder"], default="target_encoder",
                    help="original pretrain/AC: the state dict to import as the encoder (default: the EMA target)")
    ap.add_argument("--rope", choices=["reference", "rotation"], default="reference",
                    help="RoPE variant recorded in the configs; released weights were trained with 'reference'")
    ap.add_argument("--preset", choices=sorted(ENCODERS), default=None,
                    help="original: encoder preset the weights must match (gives the head count)")
    ap.add_argument("--heads", type=int, default=None, help="original: encoder heads (default: by width)")
    ap.add_argument("--pred-heads", type=int, default=None, help="original: predictor heads (default: 384 -> 12)")
    ap.add_argument("--ac-heads", type=int, default=None, help="original: AC predictor heads (default: 1024 -> 16)")
    ap.add_argument("--probe-heads", type=int, default=None, help=f"original classifier: heads (default {PROBE_HEADS})")
    ap.add_argument("--img-size", type=int, default=256,
                    help="original AC: training resolution; the AC RoPE grid is img_size // patch (default 256)")
    ap.add_argument("--use-extrinsics", action="store_true",
                    help="original AC: import the extrinsics encoder (released models do not use it)")
    ap.add_argument("--encoder-only", action="store_true", help="original: import only the encoder")
    ap.add_argument("--index", type=int, default=0, help="original classifier: which entry of `classifiers`")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output bundle")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm import tqdm

    from jepa.models import io

    src = Path(args.src)
    steps = tqdm(total=3, desc="jepa convert", unit="step", file=sys.stderr)
    try:
        steps.set_postfix_str(f"reading {src}")
        if args.source == "original":
            ckpt = read_original(src)
            steps.update()
            steps.set_postfix_str("converting")
            configs, params = convert_original(
                ckpt, kind=args.kind, which=args.which, preset=args.preset, heads=args.heads,
                pred_heads=args.pred_heads, ac_heads=args.ac_heads, probe_heads=args.probe_heads, rope=args.rope,
                img_size=args.img_size, use_extrinsics=args.use_extrinsics, encoder_only=args.encoder_only,
                index=args.index, source=str(src))
            meta = {"kind": args.kind or detect_original_kind(ckpt)}
            if meta["kind"] != "classifier":
                meta["which"] = args.which
            if meta["kind"] == "ac":
                meta["img_size"] = args.img_size
            del ckpt
        else:
            sd, hf_config = read_hf(src)
            steps.update()
            steps.set_postfix_str("converting")
            configs, params = convert_hf(sd, hf_config, rope=args.rope, kind=args.kind, source=str(src))
            meta = {"kind": detect_hf_kind(sd), **hf_meta(hf_config)}
            del sd
        steps.update()
        meta.update({"source": args.source, "src": str(src.absolute()), "converted_by": "jepa convert"})
        steps.set_postfix_str(f"writing {args.out}")
        out = io.save_bundle_params(args.out, configs, params, meta, overwrite=args.overwrite)
        steps.update()
    except (ConversionError, io.BundleError) as e:
        steps.close()
        print(f"jepa convert: error: {e}", file=sys.stderr)
        return 2
    steps.close()
    for name, cfg in configs.items():
        print(f"  {name:<13} {type(cfg).__name__:<18} {_count(params[name]) / 1e6:8.2f}M params")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
