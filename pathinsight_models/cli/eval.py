"""`pathinsight eval`: run tasks on a model, score prediction files, compare result files, list tasks.

    pathinsight eval --model ID_OR_PATH [--adapter PATH] --data DIR_OR_REPO --tasks crc,pcam --output DIR
    pathinsight eval score --task pathvqa --mode quilt --predictions preds.jsonl --output DIR
    pathinsight eval compare base/results.json tuned/results.json --output DIR
    pathinsight eval tasks
    accelerate launch -m pathinsight_models.evaluation --model ID --data DIR --output DIR   # several processes/GPUs
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pathenhanceds.errors import InputError

from .argtypes import fraction, int_at_least


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _add_stats(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of --limit sampling and of the bootstrap (default 0)")
    p.add_argument("--bootstrap", type=int_at_least(0), default=1000, metavar="N", help="bootstrap resamples (0: no CIs)")
    p.add_argument("--confidence", type=fraction(closed_low=False), default=0.95, help="CI level in (0, 1) (default 0.95)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier output of `pathinsight eval` in --output")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `pathinsight eval` and its subcommands score, compare, tasks."""
    from pathinsight_models.evaluation.backends import list_backends
    from pathinsight_models.evaluation.tasks import default_tasks, list_tasks

    defaults = default_tasks()
    p = subparsers.add_parser(
        "eval", help="evaluate a model on PathEnhanceDS tasks, score predictions, compare runs",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # else `eval score --mode` reads as an abbreviation of `eval --model`
    )
    p.add_argument("--model", help="Hub id or local directory of a transformers VLM")
    p.add_argument("--adapter", help="PEFT adapter directory or Hub id (merged into the model for speed)")
    p.add_argument("--data", help="PathEnhanceDS build directory or Hub id")
    p.add_argument("--tasks", type=_csv, default=defaults,
                   help=f"comma-separated, from: {', '.join(list_tasks())} (default {','.join(defaults)})")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--limit", type=int_at_least(1), help="at most N rows per task (seeded sample of whole images)")
    p.add_argument("--batch-size", type=int_at_least(1), default=16, help="generation batch size (default 16; 1 = per-item loop)")
    p.add_argument("--max-new-tokens", type=int_at_least(1), help="override every task's token budget")
    p.add_argument("--output", type=Path, help="output directory (results.json, predictions/, report.md)")
    p.add_argument("--pathmmu", type=Path, help="PathMMU folder (data.json + images) for the pathmmu task")
    p.add_argument("--pathmmu-split", default="test", help="PathMMU split when data.json has splits (default test)")
    p.add_argument("--pathmmu-prompt", default="ours",
                   help="PathMMU prompt format: ours (default) or PathMMU's own, e.g. pathmmu-llava1.5, "
                        "pathmmu-qwenvl, pathmmu-blip2, pathmmu-instructblip")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype (default float32 on CPU, the checkpoint's on GPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--backend", default="hf", choices=list_backends(),
                   help="generation back-end: hf (transformers, default) or vllm (CUDA GPU, pathinsight[vllm])")
    p.add_argument("--model-revision", help="Hub revision of --model")
    p.add_argument("--data-revision", help="Hub revision of --data")
    p.add_argument("--labels", dest="class_labels", type=_csv, metavar="A,B,C",
                   help="class names of the `classification` task (default: the dataset's label column)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_stats(p)
    p.set_defaults(func=cmd_eval)
    sub = p.add_subparsers(dest="eval_command", metavar="{score,compare,tasks}")

    s = sub.add_parser("score", help="score a JSONL of predictions from any model or service")
    s.add_argument("--task", required=True, choices=list_tasks())
    s.add_argument("--mode", type=_csv, help="metric mode(s), comma-separated (default: all of the task's)")
    s.add_argument("--predictions", required=True, type=Path,
                   help='JSONL: {"id", "prediction", "reference", + task fields (answer_type, options, label, group)}')
    s.add_argument("--labels", dest="class_labels", type=_csv, metavar="A,B,C",
                   help="class names of the `classification` task (default: the labels/references in the file)")
    s.add_argument("--output", type=Path, help="output directory (default: <file stem>_scored next to the file)")
    _add_stats(s)
    s.set_defaults(func=cmd_score)

    c = sub.add_parser("compare", help="models x tasks table (Markdown + PNG) from results.json files")
    c.add_argument("results", nargs="+", type=Path, help="results.json files (or their directories)")
    c.add_argument("--labels", type=_csv, help="row names, comma-separated (default: model ids)")
    c.add_argument("--output", type=Path, help="write compare.md and compare.png here")
    c.set_defaults(func=cmd_compare)

    t = sub.add_parser("tasks", help="list the evaluation tasks, their modes and headline metrics")
    t.set_defaults(func=cmd_tasks)


def cmd_eval(args: argparse.Namespace) -> int:
    """`pathinsight eval`: run tasks on a model and write results.json, predictions and report."""
    from pathinsight_models.evaluation.runner import run_evaluation

    if not args.model or not args.output:
        raise InputError("`pathinsight eval` needs --model and --output",
                         fix="e.g. pathinsight eval --model ID --data DIR --tasks crc --output runs/base")
    results = run_evaluation(
        args.model, args.data, args.tasks, output=args.output, adapter=args.adapter, split=args.split,
        limit=args.limit, batch_size=args.batch_size, seed=args.seed, n_resamples=args.bootstrap,
        confidence=args.confidence, max_new_tokens=args.max_new_tokens, pathmmu=args.pathmmu,
        pathmmu_split=args.pathmmu_split, pathmmu_prompt=args.pathmmu_prompt, dtype=args.dtype, device=args.device,
        model_revision=args.model_revision,
        data_revision=args.data_revision, progress=not args.no_progress, overwrite=args.overwrite,
        labels=args.class_labels, backend=args.backend,
    )
    from pathinsight_models.evaluation.distributed import current_processes

    if not current_processes().is_main:  # `accelerate launch`: the main process reports
        return 0
    _print_summary(results)
    print(f"wrote {args.output / 'results.json'}, {args.output / 'report.md'}, {args.output / 'predictions'}/")
    return 0


def _print_summary(results: dict) -> None:
    from pathinsight_models.evaluation.report import cell

    for name, r in results["tasks"].items():
        heads = "; ".join(f"{h['label']} ({h['mode']}) {cell(r['metrics'][h['mode']][h['metric']])}"
                          for h in r["headline"])
        print(f"{name}: n={r['n']} unparsed={r['parse_failures']} {heads}")


def cmd_score(args: argparse.Namespace) -> int:
    """`pathinsight eval score`: score a JSONL of predictions."""
    from pathinsight_models.evaluation.runner import score_file

    results = score_file(args.task, args.predictions, output=args.output, modes=args.mode, seed=args.seed,
                         n_resamples=args.bootstrap, confidence=args.confidence, overwrite=args.overwrite,
                         labels=args.class_labels)
    _print_summary(results)
    r = results["tasks"][args.task]
    print(json.dumps({mode: {k: v["value"] for k, v in m.items()} for mode, m in r["metrics"].items()}, indent=2))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """`pathinsight eval compare`: a models × tasks table from results.json files."""
    from pathinsight_models.evaluation.report import compare

    markdown, png = compare(args.results, labels=args.labels, output=args.output)
    print(markdown)
    if png:
        print(f"wrote {png} and {png.with_name('compare.md')}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    """`pathinsight eval tasks`: list the evaluation tasks."""
    from pathinsight_models.evaluation.tasks import get_task, list_tasks

    for task in map(get_task, list_tasks()):
        rows = f"config {task.config}, sources {task.rows.describe_sources()}" if task.rows else "own data"
        default = " (default)" if task.default else ""
        print(f"{task.name}{default}: {task.description}\n  modes: {', '.join(task.modes)}; rows: {rows}; "
              f"max_new_tokens {task.max_new_tokens}")
    return 0
