"""`build_knowledge`: a classification dataset → cell graphs → GNN → IG → tables → two-stage Q&A dataset.

Output folder (through the guarded output API of `pathenhanceds.atomic`, kind `knowledge`: written to
`.K.tmp-PID-HEX` beside K with the user's umask, swapped in at the end; `--overwrite` replaces only an
earlier knowledge build, whose manifest names it; never the input dataset or a folder holding it):

    K/README.md                                    card with `configs:` (knowledge_stage1 default, knowledge_stage2)
    K/data/knowledge_stage{1,2}/<split>-NNNNN-of-NNNNN.parquet   PathEnhanceDS row schema, splits of D
    K/manifest.json                                counts, digest, inputs, GNN/baseline/retrieval numbers
    K/gnn/gnn.safetensors, gnn.json, metrics.json, confusion.png
    K/tables/<split>.parquet                       one knowledge table per image
    K/index/quadrant.npz, K/index/embedding.npz    retrieval indexes over the training images
    K/teacher.jsonl                                LLM teachers only: prompt, model, output, verdict per answer
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathenhanceds.atomic import begin_output_dir, check_output, commit_output_dir, marker_fields
from pathenhanceds.errors import InputError
from pathenhanceds.layout import CARD_FILE, MANIFEST_FILE, config_dir
from pathenhanceds.schema import SPLITS, make_messages

from .graph import GRAPH_KINDS, GraphConfig, image_to_graph, quadrant_vector

CONFIGS = ("knowledge_stage1", "knowledge_stage2")


@dataclass
class KnowledgeResult:
    """What `build_knowledge` produced."""

    output: Path
    counts: dict[str, dict[str, int]]
    digest: str
    manifest: dict[str, Any]


def _load(data: str | os.PathLike[str], config: str, sources: Sequence[str] = ()) -> Any:
    import datasets

    local = Path(data).expanduser()
    if not local.exists():
        raise InputError("dataset folder not found", file=local, fix="pass --data <PathEnhanceDS folder>")
    try:
        ds = datasets.load_dataset(str(local), config)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise InputError(f"cannot load config {config!r}: {exc}", file=local,
                         fix="pass --config with a config of that dataset (e.g. classification)") from exc
    missing = {"images", "label", "id", "source"} - set(next(iter(ds.values())).column_names)
    if missing:
        raise InputError(f"dataset lacks column(s) {sorted(missing)}", file=local,
                         fix="use a PathEnhanceDS-layout classification config")
    ds = ds.cast_column("images", datasets.List(datasets.Image(decode=False)))  # bytes; decoded per image
    if sources:
        present = sorted({s for split in ds.values() for s in split.unique("source")})
        unknown = sorted(set(sources) - set(present))
        if unknown:
            raise InputError(f"no rows from source(s) {unknown}", file=local, fix=f"sources present: {present}")
        keep = set(sources)
        ds = ds.filter(lambda source: source in keep, input_columns="source", desc="selecting sources")
    if "train" not in ds or len(ds["train"]) == 0:
        raise InputError("dataset has no train rows", file=local, fix="the GNN is trained on the train split")
    return ds


def _pixels(image: dict[str, Any], where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image["bytes"])) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, TypeError) as exc:
        raise InputError(f"unreadable image: {exc}", record=where) from exc


def _public_spec(teacher: str) -> str:
    """The teacher spec as recorded: a local model directory by its name only (no local paths in K)."""
    kind, _, arg = teacher.partition(":")
    if kind == "hf" and arg and Path(arg).expanduser().exists():
        return f"hf:{Path(arg).name}"
    return teacher


def _row(row: dict[str, Any], config: str, turns: list[tuple[str, str]]) -> dict[str, Any]:
    """A knowledge row: the input row's image, label and provenance with the teacher's Q&A."""
    return {"id": f"{row['id']}#{config}", "source": row["source"], "task": config,
            "images": [{"bytes": row["images"][0]["bytes"], "path": None}], "messages": make_messages(turns),
            "label": row["label"], "answer_type": "open", "image_sha256": list(row["image_sha256"]),
            "license": row["license"]}


def dataset_info(root: Path, counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """README `dataset_info:` per config (features, split sizes and bytes).

    Besides documenting the folder it makes `load_dataset`'s cache key depend on the content: without it
    two folders of the same name share one cache entry.
    """
    import datasets

    from pathenhanceds.schema import FEATURES

    infos = []
    for config, splits in counts.items():
        split_dict = datasets.SplitDict()
        for split, n in splits.items():
            size = sum(f.stat().st_size for f in config_dir(root, config).glob(f"{split}-*.parquet"))
            split_dict.add(datasets.SplitInfo(name=split, num_bytes=size, num_examples=n))
        total = sum(s.num_bytes for s in split_dict.values())
        infos.append(datasets.DatasetInfo(features=FEATURES, splits=split_dict, download_size=total,
                                          dataset_size=total, config_name=config)._to_yaml_dict())
    return infos


def _card(counts: dict[str, dict[str, int]], manifest: dict[str, Any], root: Path) -> str:
    import yaml

    configs = [{"config_name": c, **({"default": True} if c == CONFIGS[0] else {}),
                "data_files": [{"split": s, "path": f"data/{c}/{s}-*.parquet"} for s in SPLITS if counts[c].get(s)]}
               for c in CONFIGS]
    header = {"pretty_name": "PathEnhanceDS knowledge-grounded explanations", "license": manifest["license"],
              "language": ["en"], "task_categories": ["image-text-to-text"],
              "tags": ["histopathology", "explainability", "cell-graph", "instruction-tuning"],
              "configs": configs, "dataset_info": dataset_info(root, counts)}
    gnn = manifest["gnn"]
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
        "# Knowledge-grounded explanation data", "",
        f"Built by `pathinsight knowledge build` from `{manifest['input']['name']}` (config "
        f"`{manifest['input']['config']}`), seed {manifest['seed']}, teacher `{manifest['teacher']['spec']}`.",
        "Cell graphs (classical nuclei segmentation) → GraphSAGE → integrated gradients → one table per image "
        "→ Q&A. Research software, not for clinical use.", "",
        "| config | " + " | ".join(SPLITS) + " |", "|---|" + "---|" * len(SPLITS),
        *[f"| {c} | " + " | ".join(str(counts[c].get(s, 0)) for s in SPLITS) + " |" for c in CONFIGS], "",
        f"GNN test balanced accuracy {gnn['test'].get('balanced_accuracy', float('nan')):.3f} "
        f"(logistic regression on graph statistics: {gnn['baseline_test'].get('balanced_accuracy', float('nan')):.3f}).",
        "", "```python", "from datasets import load_dataset",
        f"stage1 = load_dataset(\"{manifest['output_name']}\", \"knowledge_stage1\")",
        f"stage2 = load_dataset(\"{manifest['output_name']}\", \"knowledge_stage2\")", "```", "",
        f"Content digest: `{manifest['digest']}`.", "",
    ]
    return "\n".join(lines)


def build_knowledge(
    data: str | os.PathLike[str],
    output: str | os.PathLike[str],
    config: str = "classification",
    graph: str = "cell",
    teacher: str = "template",
    seed: int = 0,
    *,
    sources: Sequence[str] = (),
    overwrite: bool = False,
    graph_config: GraphConfig | None = None,
    gnn_options: dict[str, Any] | None = None,
    progress: bool = True,
) -> KnowledgeResult:
    """Build the knowledge dataset K from the classification config of a PathEnhanceDS-layout folder.

    `sources` keeps only rows of those sources (a build's classification config mixes label sets, e.g.
    CRC tissue classes and PCam yes/no; one GNN is trained over all labels it is given).
    """
    from tqdm.auto import tqdm

    from pathenhanceds import __version__
    from pathenhanceds.write.licenses import dataset_license
    from pathenhanceds.write.manifest import write_manifest
    from pathenhanceds.write.parquet import write_split

    from .attribution import integrated_gradients
    from .gnn import baseline_statistics_lr, classification_report, plot_confusion, train_gnn
    from .retrieval import Index, hit_rate
    from .tables import build_table, write_tables
    from .teacher import get_teacher

    GRAPH_KINDS.get(graph)
    make_qa = get_teacher(teacher)  # fails early on a bad spec
    # Before any work: never the input (or a folder holding it), cwd or home; --overwrite only an earlier K.
    output = check_output(output, overwrite=overwrite, kind="knowledge", protected=[data])
    ds = _load(data, config, sources)
    gcfg = graph_config or GraphConfig()
    splits = [s for s in SPLITS if s in ds]

    graphs: dict[str, list] = {}
    for split in splits:
        rows = ds[split]
        graphs[split] = [
            image_to_graph(_pixels(r["images"][0], r["id"]), gcfg, label=r["label"], id=r["id"])
            for r in tqdm(rows, desc=f"cell graphs ({split})", unit="image", disable=not progress)
        ]
    unlabelled = next((g.id for gs in graphs.values() for g in gs if not g.label), None)
    if unlabelled is not None:
        raise InputError("a row has no label", file=data, record=unlabelled,
                         fix="use a classification config (every row has a `label`)")
    train = graphs["train"]
    validation = graphs.get("validation")
    if not validation:  # carve a seeded 10% of train for early stopping
        order = np.random.default_rng(seed).permutation(len(train))
        cut = max(1, len(train) // 10)
        validation = [train[i] for i in order[:cut]]
        train = [train[i] for i in order[cut:]]
    classes = sorted({g.label for gs in graphs.values() for g in gs if g.label})
    model = train_gnn(train, validation, classes, seed=seed, progress=progress, **(gnn_options or {}))

    # Again (training took a while; another run may have started), then the temp folder beside K.
    output = check_output(output, overwrite=overwrite, kind="knowledge", protected=[data])
    tmp = begin_output_dir(output, kind="knowledge")  # the user's umask; leftovers of killed runs removed
    try:
        (tmp / "gnn").mkdir()
        model.save(tmp / "gnn")
        evaluation = graphs.get("test") or validation
        eval_split = "test" if graphs.get("test") else (
            "validation" if graphs.get("validation") else "validation (carved from train)")
        refs = [g.label for g in evaluation]
        report = classification_report(model.predict(evaluation), refs, classes)
        baseline = classification_report(baseline_statistics_lr(train, evaluation, classes, seed), refs, classes)
        plot_confusion(report, tmp / "gnn" / "confusion.png", title=f"GNN ({eval_split})")
        metrics = {"split": eval_split, "test": report, "baseline_test": baseline,
                   "best_epoch": model.best_epoch, "epochs": len(model.history)}
        (tmp / "gnn" / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

        # Retrieval indexes over the training images; hit rate of the evaluation split's nearest neighbour.
        train_all = graphs["train"]
        ids = [g.id for g in train_all]
        labels = [g.label for g in train_all]
        (tmp / "index").mkdir()
        indexes = {"quadrant": Index.build("quadrant", np.stack([quadrant_vector(g) for g in train_all]), ids, labels),
                   "embedding": Index.build("embedding", model.embeddings(train_all), ids, labels)}
        queries = {"quadrant": np.stack([quadrant_vector(g) for g in evaluation]),
                   "embedding": model.embeddings(evaluation)}
        retrieval = {}
        for kind, index in indexes.items():
            index.save(tmp / "index" / f"{kind}.npz")
            retrieval[kind] = {"hit_rate": hit_rate(index, queries[kind], refs), "split": eval_split}

        digest = hashlib.sha256()
        counts: dict[str, dict[str, int]] = {c: {} for c in CONFIGS}
        files: list[str] = []
        records: list[dict[str, Any]] = []
        explained = 0
        (tmp / "tables").mkdir()
        for split in splits:
            tables, turns = [], []
            for g in tqdm(graphs[split], desc=f"attributions + Q&A ({split})", unit="image", disable=not progress):
                table = build_table(g, integrated_gradients(model, g), model, split=split)
                tables.append(table)
                qa = make_qa(table)
                records += qa.records
                turns.append((qa.stage1, qa.stage2))
                explained += table["explained_class"] == table["label"]
            write_tables(tables, tmp / "tables" / f"{split}.parquet")
            for k, cfg in enumerate(CONFIGS):  # rows streamed: only the Q&A text is held in memory
                rows = (_row(row, cfg, turns[i][k]) for i, row in enumerate(ds[split]))
                result = write_split(rows, config_dir(tmp, cfg), split, digest)
                if result.rows:
                    counts[cfg][split] = result.rows
                files += [str(f.relative_to(tmp)) for f in result.files]
        if records:
            with open(tmp / "teacher.jsonl", "w") as fh:
                for r in records:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        input_manifest = Path(data).expanduser() / MANIFEST_FILE
        source_meta = json.loads(input_manifest.read_text()) if input_manifest.exists() else {}
        licenses = sorted({lic for s in splits for lic in ds[s]["license"]})
        manifest = {
            "name": "PathEnhanceDS-knowledge", "library_version": __version__, "seed": seed,
            "generator": marker_fields("knowledge")["generator"],  # lets --overwrite recognise this build
            "output_name": output.name,
            "input": {"name": Path(data).expanduser().resolve().name, "config": config, "sources": list(sources),
                      "digest": source_meta.get("digest"), "rows": {s: len(ds[s]) for s in splits}},
            "graph": {"kind": graph, **asdict(gcfg)},
            "gnn": {"classes": classes, **model.model.config, "best_epoch": model.best_epoch,
                    "evaluated_on": eval_split,
                    "test": {k: report[k] for k in ("balanced_accuracy", "macro_f1", "accuracy", "n")},
                    "baseline_test": {k: baseline[k] for k in ("balanced_accuracy", "macro_f1", "accuracy", "n")}},
            "retrieval": retrieval,
            "teacher": {"spec": _public_spec(teacher),  # keys live in the environment, never here
                        "rewrites": len(records), "accepted": sum(r["accepted"] for r in records),
                        "explained_rows": int(explained)},
            "digest": digest.hexdigest(), "counts": counts, "files": sorted(files),
            "license": dataset_license(licenses), "licenses": licenses,
        }
        write_manifest(tmp / MANIFEST_FILE, manifest)
        (tmp / CARD_FILE).write_text(_card(counts, manifest, tmp))
        commit_output_dir(tmp, output, kind="knowledge")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return KnowledgeResult(output, counts, manifest["digest"], manifest)
