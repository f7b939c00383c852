"""Command-line entry point: `melhubert <stage> ...` (also `python -m melhubert_lib ...`).

Each stage calls the same library functions as the notebooks; `pretrain` runs under torchrun too.
An error prints one line to stderr and exits with status 1; `melhubert --debug <stage> ...` shows the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from .scales import SCALES

# bad input or a bad environment: the message says what to fix, so a traceback would only hide it
EXPECTED_ERRORS = (ValueError, OSError, FloatingPointError)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", default="default", help=f"one of {', '.join(SCALES)} (default: default)")
    p.add_argument("--work-dir", default="work", help="folder for corpora, caches and runs (default: work)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--librispeech", default=None,
                   help="folder holding real LibriSpeech split folders (train-clean-360, ...) instead of the "
                        "synthetic corpus")


def _at_least_one(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _build_corpus(args: argparse.Namespace) -> None:
    from .data.workspace import open_workspace

    ws = open_workspace(args.scale, args.work_dir, args.seed, args.librispeech)
    print(json.dumps({"librispeech": str(ws.librispeech), "corpus": str(ws.corpus_root)}, indent=2))


def _pretrain(args: argparse.Namespace) -> None:
    from .data.workspace import open_workspace
    from .training.baseline import pretrain_baseline

    ws = open_workspace(args.scale, args.work_dir, args.seed, args.librispeech)
    sched = ws.scale.pretrain
    overrides = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
    result = pretrain_baseline(ws, name=args.name, sched=dataclasses.replace(sched, **overrides),
                               model_preset=args.preset)
    final = result.runs[-1].final
    print(json.dumps({"model": str(result.model_dir), "valid_loss": final.loss, "valid_accuracy": final.accuracy}))


def _compress(args: argparse.Namespace) -> None:
    from .compression.methods import get_method
    from .data.workspace import open_workspace

    method = get_method(args.method)  # an unknown name is refused before any corpus or training work
    ws = open_workspace(args.scale, args.work_dir, args.seed, args.librispeech)
    table = method.run(ws, threads=args.threads, start_dir=args.base).table()
    print(table[["run", "level", "setting", "params", "nonzero_params", "macs_per_second", "rtf", "loss_before",
                 "loss_after", "model_dir"]].to_json(orient="records", indent=2))


def _run_notebook(args: argparse.Namespace) -> None:
    import yaml

    from .study.notebooks import run_notebook

    corpora = {"librispeech": args.librispeech, "voxceleb1": args.voxceleb1, "speech_commands": args.speech_commands}
    parameters = {name: yaml.safe_load(value) for name, value in args.parameter}  # papermill's reading of -p
    run_notebook(args.notebook, args.scale, args.work_dir, args.figures_dir, args.kernel, output=args.output,
                 corpora=corpora, parameters=parameters)


def _validate(args: argparse.Namespace) -> None:
    from .study.notebooks import validate_notebooks

    sys.exit(validate_notebooks(args.notebooks, args.kernel))


def _efficiency(args: argparse.Namespace) -> None:
    from .efficiency import measure
    from .model import MelHuBERT

    print(measure(MelHuBERT.from_pretrained(args.checkpoint), args.seconds, args.threads).to_json())


def _downstream(args: argparse.Namespace) -> None:
    from .data.tasks import load_task
    from .data.workspace import open_workspace
    from .model import MelHuBERT
    from .probes.judging import Candidate, evaluate
    from .probes.layer_features import model_source

    ws = open_workspace(args.scale, args.work_dir, args.seed, args.librispeech,
                        voxceleb1=args.voxceleb1, speech_commands=args.speech_commands)
    tasks = [load_task(ws, name) for name in args.tasks.split(",")]
    candidates = [Candidate(model_source(MelHuBERT.from_pretrained(c), c), args.method) for c in args.checkpoints]
    result = evaluate(ws, candidates, tasks)
    test = result.scores[result.scores.split == "test"]
    print(test[["source", "task", "seed", "metric", "value"]].to_json(orient="records", indent=2))


def _summary(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .data.atomic import write_text_atomic
    from .data.workspace import open_workspace
    from .scales import get_scale
    from .study.summary import results_summary

    results = Path(args.work_dir) / get_scale(args.scale).name / "results"
    if not results.is_dir():  # checked first: opening a workspace builds its corpus
        raise FileNotFoundError(f"{results}: no results yet; run `make figures` (or the notebooks) at this scale")
    ws = open_workspace(args.scale, args.work_dir, args.seed, args.librispeech)
    text = results_summary(ws)
    if args.output is None:
        print(text)
    else:
        write_text_atomic(Path(args.output), text + "\n")


def _import_checkpoint(args: argparse.Namespace) -> None:
    from .data.authors_checkpoint import import_checkpoint

    out = import_checkpoint(args.ckpt, args.folder, args.feature_stats)
    print(json.dumps({"checkpoint": str(out)}))


def _s3prl_downstream(args: argparse.Namespace) -> None:
    from .probes.s3prl_upstream import run_downstream

    run_downstream(args.s3prl_args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per pipeline stage."""
    parser = argparse.ArgumentParser(prog="melhubert", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-corpus", help="synthesise the embedded corpus of a scale (once)")
    _common(p)
    p.set_defaults(func=_build_corpus)
    p = sub.add_parser("pretrain", help="fit targets and pretrain the baseline (resumes; torchrun-ready)")
    _common(p)
    p.add_argument("--name", default="baseline")
    p.add_argument("--steps", type=_at_least_one, default=None, help="override the scale's step count (>= 1)")
    p.add_argument("--lr", type=float, default=None, help="override the scale's peak learning rate")
    p.add_argument("--preset", default=None, help="another model preset on the same corpus and targets, e.g. "
                   "default-flash (FLASH's gated attention units); give it its own --name")
    p.set_defaults(func=_pretrain)
    p = sub.add_parser("compress", help="compress the baseline with a registered method, fine-tuning every level "
                                        "(resumes; levels in runs/<method>/)")
    _common(p)
    p.add_argument("method", help="a registered method, e.g. heads-l1, weights-l1, svd-uniform, ffn-shrink, "
                                  "distill-teacher (an unknown name gets the full list)")
    p.add_argument("--threads", type=_at_least_one, default=1, help="torch threads for the speed measurement")
    p.add_argument("--base", default=None,
                   help="a checkpoint folder to compress instead of the workspace's baseline, e.g. an imported one "
                        "(its levels train on its own cluster head's labels; rows in compression-checkpoints.csv)")
    p.set_defaults(func=_compress)
    p = sub.add_parser("run-notebook", help="execute a notebook with papermill (replaced, or written to --output, only "
                                            "on success)")
    p.add_argument("notebook")
    p.add_argument("--scale", default="default")
    p.add_argument("--work-dir", default="work")
    p.add_argument("--figures-dir", default="figures")
    p.add_argument("--kernel", default="melhubert")
    p.add_argument("--output", default=None, help="write the executed notebook here (default: replace the notebook)")
    p.add_argument("--librispeech", default=None, help="real LibriSpeech root (the folder of split folders)")
    p.add_argument("--voxceleb1", default=None, help="real VoxCeleb1 folder (notebooks that judge speaker ID)")
    p.add_argument("--speech-commands", default=None, help="real Speech Commands v0.02 folder (keyword spotting)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a notebook parameter (the value is read as YAML: 3, 0.5, [0, 1, 2], null); repeatable")
    p.set_defaults(func=_run_notebook)
    p = sub.add_parser("efficiency", help="params, MACs per second of audio, CPU real-time factor and memory as JSON")
    p.add_argument("checkpoint", help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio length of the timed pass (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the timing (default 1)")
    p.set_defaults(func=_efficiency)
    p = sub.add_parser("downstream", help="probe checkpoints on the downstream tasks; rows go to results/")
    _common(p)
    p.add_argument("checkpoints", nargs="+", help="checkpoint directories")
    p.add_argument("--tasks", default="PR,SID,KS,ASR", help="comma-separated tasks (default: PR,SID,KS,ASR)")
    p.add_argument("--method", default="baseline", help="method label of these checkpoints in the results")
    p.add_argument("--voxceleb1", default=None, help="real VoxCeleb1 folder (with --librispeech)")
    p.add_argument("--speech-commands", default=None, help="real Speech Commands v0.02 folder (with --librispeech)")
    p.set_defaults(func=_downstream)
    p = sub.add_parser("summary", help="the results summary (Markdown tables generated from results/)")
    _common(p)
    p.add_argument("--output", default=None, help="write it to this file (default: print it)")
    p.set_defaults(func=_summary)

    p = sub.add_parser("import-checkpoint", help="convert one of the MelHuBERT authors' released .ckpt files into a "
                                                 "suite checkpoint folder")
    p.add_argument("ckpt", help="the authors' .ckpt file (read with weights_only=True)")
    p.add_argument("folder", help="the suite checkpoint folder to write (config.json, model.safetensors, stats)")
    p.add_argument("--feature-stats", required=True,
                   help="the (2, 40) log-Mel mean/std .npy the checkpoint was trained with, e.g. the authors' "
                        "libri-960-mean-std.npy for their 960 h models")
    p.set_defaults(func=_import_checkpoint)
    p = sub.add_parser("s3prl-downstream", help="s3prl's run_downstream.py with -u melhubert_suite available",
                       description="Arguments after the command go to s3prl's run_downstream.py unchanged, e.g. "
                                   "-m train -u melhubert_suite -k <checkpoint dir> -d asr -n <experiment>")
    p.add_argument("s3prl_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_s3prl_downstream)
    p = sub.add_parser("validate-notebooks", help="nbval over smoke-scale copies of notebooks")
    p.add_argument("notebooks", nargs="+")
    p.add_argument("--kernel", default="melhubert")
    p.set_defaults(func=_validate)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and run the chosen stage; an error prints one line (the traceback with --debug), exit 1."""
    argv = sys.argv[1:] if argv is None else argv
    debug = argv[:1] == ["--debug"]
    stage = argv[1:] if debug else argv
    if stage[:1] == ["s3prl-downstream"] and not {"-h", "--help"} & set(stage[1:2]):
        # argparse's REMAINDER drops leading options such as `-m train`, so s3prl's arguments bypass the parser
        args = argparse.Namespace(func=_s3prl_downstream, s3prl_args=stage[1:], debug=debug)
    else:
        args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except Exception as err:
        if args.debug:
            raise
        print(f"melhubert: error: {error_line(err)}", file=sys.stderr)
        sys.exit(1)


def error_line(err: Exception) -> str:
    """The one-line report of an error: its message, or for an unexpected error also its type and the --debug hint."""
    message = " ".join(str(err).split())
    if isinstance(err, EXPECTED_ERRORS):
        return message
    return f"{type(err).__name__}: {message} (an unexpected error; rerun with --debug for the traceback)"
