"""`jepa data`: dataset tools.

  jepa data shard --format csv   --lists a.csv b.csv [--weights 0.3 0.7] [--root DIR] OUTPUT
  jepa data shard --format ssv2  --root SSV2_DIR [--labels_dir D --video_dir D] --split train OUTPUT
  jepa data shard --format ek100 --root EK_DIR [--annotations_dir D --video_root D] --split validation
                  [--layout videos|frames --tau_a 1.0 --context_sec 6.0] OUTPUT
      OUTPUT: --out DIR --name NAME --num_shards N
      common: [--workers W] [--frames_as_jpeg] [--short_side 256] [--on_error raise|skip] [--overwrite]
  jepa data build ssv2|ek100|synthetic|robot_episodes --data_dir DIR [--manual_dir DIR] [--workers W] [--config C]

`shard` writes ArrayRecord shards of `jepa.data.records` dicts (see `jepa.data.shard`); `build` runs the
tensorflow-datasets builder `Builder` of `data/<name>/<name>_dataset_builder.py` (installed as module
`jepa_datasets.<name>.<name>_dataset_builder`), without TensorFlow.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

from jepa.data import csvlist, ek100, shard, ssv2


def _shard_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shard", help="video lists / SSv2 / EK100 -> ArrayRecord shards",
                       description="Write a dataset as ArrayRecord shards of jepa.data.records dicts.")
    p.add_argument("--format", required=True, choices=["csv", "ssv2", "ek100"], help="input dataset kind")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--name", required=True, help="dataset name: shards are NAME-00000-of-000NN.array_record")
    p.add_argument("--num_shards", type=int, required=True)
    p.add_argument("--workers", type=int, default=1, help="decoding processes")
    p.add_argument("--frames_as_jpeg", action="store_true", help="store per-frame JPEGs instead of video bytes")
    p.add_argument("--short_side", type=int, default=None,
                   help="downscale videos whose short side is larger (csv/ssv2 default: keep; ek100 default: 256)")
    p.add_argument("--jpeg_quality", type=int, default=90)
    p.add_argument("--crf", type=int, default=23, help="h264 quality of re-encoded videos")
    p.add_argument("--split", default="train", help="ssv2 / ek100 split: train, validation or test")
    p.add_argument("--on_error", choices=["raise", "skip"], default="raise",
                   help="annotation records with a missing field / unknown class / missing video: stop or skip")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset NAME in --out")
    p.add_argument("--no_progress", action="store_true")
    g = p.add_argument_group("csv (V-JEPA video lists)")
    g.add_argument("--lists", nargs="+", help="CSV video lists (`path label` per line)")
    g.add_argument("--weights", nargs="+", type=float, help="mixture weight of each list (stored in NAME.json)")
    g.add_argument("--root", help="csv: folder that relative paths are relative to; ssv2 / ek100: dataset root")
    g = p.add_argument_group("ssv2")
    g.add_argument("--labels_dir", help="folder with labels.json, train.json, ... (default: found under --root)")
    g.add_argument("--video_dir", help="folder with <id>.webm (default: found under --root)")
    g = p.add_argument_group("ek100")
    g.add_argument("--annotations_dir", help="folder with EPIC_100_*.csv (default: found under --root)")
    g.add_argument("--video_root", help="folder with PXX/videos/PXX_YY.MP4 (default: found under --root)")
    g.add_argument("--layout", choices=["videos", "frames"], default="videos",
                   help="read PXX/videos/*.MP4 or PXX/rgb_frames/PXX_YY/frame_*.jpg")
    g.add_argument("--tau_a", type=float, default=1.0, help="anticipation time (s) before the action start")
    g.add_argument("--context_sec", type=float, default=6.0, help="seconds kept before the action start")


def _build_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build a tensorflow-datasets dataset (no TensorFlow needed)",
                       description="Run data/<name>/<name>_dataset_builder.py:Builder.download_and_prepare().")
    p.add_argument("name", help="builder name: ssv2, ek100, synthetic, robot_episodes, ...")
    p.add_argument("--data_dir", required=True, help="tfds data_dir to write into")
    p.add_argument("--manual_dir", help="folder with the manually downloaded files (ssv2, ek100)")
    p.add_argument("--workers", type=int, default=1, help="decoding processes (builders that support it)")
    p.add_argument("--config", help="builder config name (builders with BUILDER_CONFIGS)")


def _require(args: argparse.Namespace, parser: argparse.ArgumentParser, *names: str) -> None:
    missing = [f"--{n}" for n in names if getattr(args, n) is None]
    if missing:
        parser.error(f"--format {args.format} needs {' and '.join(missing)}")


def run_shard(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = shard.ShardOptions(frames_as_jpeg=args.frames_as_jpeg, short_side=args.short_side,
                                 jpeg_quality=args.jpeg_quality, crf=args.crf, context_sec=args.context_sec)
    metadata: dict = {"format": args.format}
    reader_skipped: list[dict] = []
    if args.format == "csv":
        _require(args, parser, "lists")
        mix = csvlist.mixture(args.lists, args.weights)
        examples, _ = csvlist.read_mixture(mix, root=args.root)
        metadata.update(lists=list(mix.paths), weights=list(mix.weights), class_names=None)
    elif args.format == "ssv2":
        if args.labels_dir is None or args.video_dir is None:
            _require(args, parser, "root")
            labels_dir, video_dir = ssv2.locate(args.root)
        labels_dir = Path(args.labels_dir) if args.labels_dir else labels_dir
        video_dir = Path(args.video_dir) if args.video_dir else video_dir
        examples, reader_skipped = ssv2.read_split(labels_dir, args.split, video_dir, on_error=args.on_error)
        labels = ssv2.read_labels(ssv2.find_file(labels_dir, ssv2.LABEL_FILES))
        # class ids are labels.json's own (a subset of the classes leaves gaps): names indexed by id
        metadata.update(split=args.split, class_names=ssv2.class_names(labels),
                        num_classes=ssv2.num_classes(labels))
    else:
        if args.annotations_dir is None or args.video_root is None:
            _require(args, parser, "root")
        annotations = Path(args.annotations_dir) if args.annotations_dir else ek100.find_annotations(args.root)
        video_root = Path(args.video_root) if args.video_root else ek100.find_video_root(args.root)
        if args.tau_a > args.context_sec:
            parser.error(f"--context_sec ({args.context_sec}) must cover --tau_a ({args.tau_a})")
        examples, reader_skipped = ek100.read_split(annotations, args.split, video_root, layout=args.layout,
                                                    tau_a=args.tau_a, on_error=args.on_error)
        vocab = ek100.read_vocabulary(annotations)  # labels are action ids, numbered 0..A-1 from the train pairs
        metadata.update(split=args.split, layout=args.layout, tau_a=args.tau_a, context_sec=args.context_sec,
                        class_names=vocab.action_names, num_classes=len(vocab.actions), **vocab.to_json())
    if not examples:
        print(f"jepa data shard: no examples to write ({len(reader_skipped)} skipped by the reader)",
              file=sys.stderr)
        for s in reader_skipped[:20]:
            print(f"  {s['message']}", file=sys.stderr)
        return 1
    summary = shard.shard_examples(examples, args.format, out_dir=args.out, name=args.name,
                                   num_shards=args.num_shards, options=options, workers=args.workers,
                                   metadata=metadata, reader_skipped=reader_skipped, overwrite=args.overwrite,
                                   progress=not args.no_progress)
    print(shard.summary_text(summary, reader_skipped))
    return 0


def load_builder_class(name: str) -> type:
    """`Builder` of `data/<name>/<name>_dataset_builder.py` (the package `jepa_datasets`)."""
    module_name = f"jepa_datasets.{name}.{name}_dataset_builder"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise SystemExit(f"jepa data build: no builder {name!r} (module {module_name} not found)") from e
        raise
    if not hasattr(module, "Builder"):
        raise SystemExit(f"jepa data build: {module_name} defines no class Builder")
    return module.Builder


def run_build(args: argparse.Namespace) -> int:
    import tensorflow_datasets as tfds

    cls = load_builder_class(args.name)
    kwargs = {"data_dir": args.data_dir, "file_format": "array_record"}  # readable without TensorFlow
    if "workers" in inspect.signature(cls.__init__).parameters:
        kwargs["workers"] = args.workers
    if args.config:
        kwargs["config"] = args.config
    builder = cls(**kwargs)
    config = tfds.download.DownloadConfig(manual_dir=args.manual_dir) if args.manual_dir else None
    builder.download_and_prepare(download_config=config)
    splits = {name: info.num_examples for name, info in builder.info.splits.items()}
    print(f"built {builder.name} {builder.version} in {builder.data_dir}: {splits}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jepa data", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _shard_parser(sub)
    _build_parser(sub)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "shard":
        try:
            return run_shard(args, sub.choices["shard"])
        except (ValueError, FileExistsError) as e:  # reader / format errors: one clear message
            print(f"jepa data shard: {e}", file=sys.stderr)
            return 2
    return run_build(args)


if __name__ == "__main__":
    sys.exit(main())
