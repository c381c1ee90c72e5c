"""Task registry: which rows a task reads, how it prompts and decodes, how it parses and scores.

An *item* is one prompt/answer pair: a dict with ``id``, ``reference`` and, once generated,
``prediction``; plus ``prompt`` (text), ``messages`` (chat prompt for generation), ``image`` (PIL
image or a zero-argument loader), ``group`` (image key, the bootstrap cluster) and task fields
(``label``, ``answer_type``, ``options``, ``subset``). The same scoring serves the runner and
``pathinsight eval score`` on predictions from any model or service.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pathenhanceds.errors import InputError
from pathenhanceds.schema import message_text

from .bootstrap import Stat, mean_stat
from .metrics import bleu1, classification, pathvqa, rouge, token_f1
from .parsers import CRC_LABELS, GRADES, Parsed, parse_choice, parse_crc, parse_grade, parse_yes_no

Item = dict[str, Any]


@dataclass
class TaskScore:
    """What scoring a task yields; `scoring.score_items` adds CIs and turns it into results.json."""

    metrics: dict[str, dict[str, float]]  # mode -> metric -> value
    stats: dict[str, dict[str, Stat]]  # mode -> metric -> bootstrap statistic
    records: list[dict[str, Any]]  # per item: parsed, correct, scores (, reason)
    parse_failures: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    modes: tuple[str, ...]
    headline: tuple[tuple[str, str, str], ...]  # (mode, metric, column label) for compare tables
    max_new_tokens: int
    scorer: Callable[[list[Item], Sequence[str]], TaskScore]
    metric_modules: tuple[str, ...]
    config: str | None = None  # PathEnhanceDS config holding the rows (None: the task reads its own data)
    sources: tuple[str, ...] | None = None  # row `source` values (None: any)
    row_task: str | None = None  # row `task` value
    to_items: Callable[[dict[str, Any]], list[Item]] | None = None
    fields: tuple[str, ...] = ()  # extra per-item fields a predictions file may carry
    parsing: str = ""  # one line on how answers are parsed, for reports

    def score(self, items: list[Item], modes: Sequence[str] | None = None) -> TaskScore:
        modes = tuple(modes or self.modes)
        unknown = [m for m in modes if m not in self.modes]
        if unknown:
            raise InputError(f"task {self.name} has no mode {unknown[0]!r}",
                             fix=f"choose from: {', '.join(self.modes)}")
        return self.scorer(items, modes)


TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise InputError(f"unknown evaluation task {name!r}", fix=f"choose from: {', '.join(TASKS)}")
    return TASKS[name]


# --- rows -> items -----------------------------------------------------------------------------


def _group(row: dict[str, Any]) -> str:
    shas = row.get("image_sha256") or []
    return shas[0] if shas else row["id"]


def single_turn_items(row: dict[str, Any]) -> list[Item]:
    """The first assistant turn is the reference; the turns before it are the prompt."""
    messages = row["messages"]
    k = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if k is None:
        raise InputError("row has no assistant turn", record=row.get("id"), fix="rebuild the dataset")
    user = [m for m in messages[:k] if m["role"] == "user"]
    return [{
        "id": row["id"], "messages": list(messages[:k]), "prompt": message_text(user[-1]) if user else "",
        "reference": message_text(messages[k]), "label": row.get("label"), "answer_type": row.get("answer_type"),
        "group": _group(row),
    }]


def conversation_items(row: dict[str, Any]) -> list[Item]:
    """One item per assistant turn, with the reference turns before it as history (teacher forcing)."""
    messages = row["messages"]
    items = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant" or k == 0:
            continue
        user = [m for m in messages[:k] if m["role"] == "user"]
        items.append({
            "id": f"{row['id']}@{k}", "messages": list(messages[:k]),
            "prompt": message_text(user[-1]) if user else "", "reference": message_text(message),
            "group": _group(row), "turn": k,
        })
    return items


# --- shared helpers ----------------------------------------------------------------------------


def _reference_class(item: Item, labels: Sequence[str], parser: Callable[[str], Parsed], task: str) -> str:
    label = item.get("label")
    if label in labels:
        return str(label)
    parsed = parser(str(label if label else item.get("reference", "")))
    if parsed.value not in labels:
        raise InputError(f"the reference of item {item.get('id')!r} is not a {task} class",
                         record=item.get("id"), fix=f"give `reference` or `label` as one of: {', '.join(labels)}")
    return str(parsed.value)


def _reasons(parsed: list[Parsed]) -> dict[str, int]:
    return dict(Counter(p.reason for p in parsed if p.reason))


def _classification(items: list[Item], labels: Sequence[str], parser, task: str):
    refs = [_reference_class(it, labels, parser, task) for it in items]
    parsed = [parser(it.get("prediction")) for it in items]
    preds = [p.value for p in parsed]
    result = classification.compute(preds, refs, labels)
    y_true, y_pred = classification.encode(preds, refs, labels)
    records = [
        {"parsed": p.value, "correct": p.value == r, **({"reason": p.reason} if p.reason else {})}
        for p, r in zip(parsed, refs, strict=True)
    ]
    return refs, parsed, result, y_true, y_pred, records


def _confusion_stat(y_true: np.ndarray, y_pred: np.ndarray, k: int, pick: Callable[[np.ndarray], float]) -> Stat:
    return Stat(fn=lambda w: pick(classification.confusion(y_true, y_pred, k, w)))


def _macro(name: str) -> Callable[[np.ndarray], float]:
    return lambda cm: classification.scores_from_confusion(cm)[name]


# --- crc ---------------------------------------------------------------------------------------


def score_crc(items: list[Item], modes: Sequence[str]) -> TaskScore:
    refs, parsed, res, y_true, y_pred, records = _classification(items, CRC_LABELS, parse_crc, "CRC")
    k = len(CRC_LABELS)
    names = {"f1": "macro_f1", "recall": "macro_recall", "precision": "macro_precision",
             "balanced_accuracy": "balanced_accuracy"}
    metrics = {"macro": {**{short: res.get(full, float("nan")) for short, full in names.items()},
                         "accuracy": res.get("accuracy", float("nan"))}}
    stats = {"macro": {**{short: _confusion_stat(y_true, y_pred, k, _macro(full)) for short, full in names.items()},
                       "accuracy": mean_stat([float(r["correct"]) for r in records])}}
    extras = {key: res[key] for key in ("per_class", "confusion_matrix", "confusion_labels") if key in res}
    return TaskScore(metrics, stats, records, sum(not p.ok for p in parsed), _reasons(parsed), extras)


# --- pcam --------------------------------------------------------------------------------------


def _binary(name: str) -> Callable[[np.ndarray], float]:
    def pick(cm: np.ndarray) -> float:
        tp, fn_ = cm[0, 0], cm[0, 1] + cm[0, 2]  # row 0 = "yes"; unparsed counts as a miss
        fp, tn = cm[1, 0], cm[1, 1]
        precision = tp / (tp + fp) if tp + fp > 0 else 0.0
        recall = tp / (tp + fn_) if tp + fn_ > 0 else float("nan")
        values = {
            "precision": precision,
            "recall": recall,
            "specificity": tn / cm[1].sum() if cm[1].sum() > 0 else float("nan"),
            "f1": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
        }
        return float(values[name])
    return pick


def score_pcam(items: list[Item], modes: Sequence[str]) -> TaskScore:
    labels = ("yes", "no")
    refs, parsed, res, y_true, y_pred, records = _classification(items, labels, parse_yes_no, "yes/no")
    per = res.get("per_class", {})
    metrics = {"binary": {
        "accuracy": res.get("accuracy", float("nan")),
        "f1": per.get("yes", {}).get("f1", float("nan")),
        "precision": per.get("yes", {}).get("precision", float("nan")),
        "recall": per.get("yes", {}).get("recall", float("nan")),
        "specificity": per.get("no", {}).get("recall", float("nan")),
        "macro_f1": res.get("macro_f1", float("nan")),
    }}
    stats = {"binary": {
        "accuracy": mean_stat([float(r["correct"]) for r in records]),
        **{name: _confusion_stat(y_true, y_pred, 2, _binary(name)) for name in ("f1", "precision", "recall", "specificity")},
        "macro_f1": _confusion_stat(y_true, y_pred, 2, _macro("macro_f1")),
    }}
    extras = {key: res[key] for key in ("per_class", "confusion_matrix", "confusion_labels") if key in res}
    return TaskScore(metrics, stats, records, sum(not p.ok for p in parsed), _reasons(parsed), extras)


# --- captioning --------------------------------------------------------------------------------


def _refs(item: Item) -> list[str]:
    ref = item.get("reference")
    return [str(r) for r in ref] if isinstance(ref, list) else [str(ref or "")]


def _text_stats(preds: list[str], refs: list[list[str]], rep: list[int] | None) -> tuple[dict, dict, list[dict]]:
    """BLEU-1 (sentence mean and corpus) and ROUGE-1/L F-measure for (prediction, references) units."""
    bleu = np.array([bleu1.item_stats(p, r) for p, r in zip(preds, refs, strict=True)], dtype=float).reshape(-1, 4)
    sentence = [bleu1.bleu1_from_stats(*row) for row in bleu]
    rg = [rouge.item_scores(p, r if len(r) > 1 else r[0]) for p, r in zip(preds, refs, strict=True)]
    metrics = {
        "bleu1": float(np.mean(sentence)) if sentence else float("nan"),
        "corpus_bleu1": bleu1.bleu1_from_stats(*bleu.sum(axis=0)) if len(bleu) else float("nan"),
        "rouge1": float(np.mean([r["rouge1"] for r in rg])) if rg else float("nan"),
        "rougeL": float(np.mean([r["rougeL"] for r in rg])) if rg else float("nan"),
    }
    stats = {
        "bleu1": mean_stat(sentence, rep),
        "corpus_bleu1": Stat(fn=lambda w: bleu1.bleu1_from_stats(*(w @ bleu)), rep=None if rep is None else np.asarray(rep)),
        "rouge1": mean_stat([r["rouge1"] for r in rg], rep),
        "rougeL": mean_stat([r["rougeL"] for r in rg], rep),
    }
    scores = [{"bleu1": s, "rouge1": r["rouge1"], "rougeL": r["rougeL"]} for s, r in zip(sentence, rg, strict=True)]
    return metrics, stats, scores


def score_captioning(items: list[Item], modes: Sequence[str]) -> TaskScore:
    preds = [str(it.get("prediction") or "") for it in items]
    metrics: dict[str, dict[str, float]] = {}
    stats: dict[str, dict[str, Stat]] = {}
    caption_metrics, caption_stats, per_caption_scores = _text_stats(preds, [_refs(it) for it in items], None)
    parsed = [parse_grade(p) for p in preds]
    ref_grades = [it.get("label") if it.get("label") in GRADES else parse_grade(_refs(it)[0]).value for it in items]
    correct = [None if r is None else p.value == r for p, r in zip(parsed, ref_grades, strict=True)]
    records = [
        {"parsed": p.value, "correct": c, "scores": s, **({"reason": p.reason} if p.reason else {})}
        for p, c, s in zip(parsed, correct, per_caption_scores, strict=True)
    ]
    if "per-caption" in modes:
        conclusion = [None if c is None else float(c) for c in correct]
        defined = [c for c in conclusion if c is not None]
        metrics["per-caption"] = {**caption_metrics,
                                  "conclusion_accuracy": float(np.mean(defined)) if defined else float("nan")}
        stats["per-caption"] = {**caption_stats, "conclusion_accuracy": mean_stat(conclusion)}
    extras: dict[str, Any] = {"conclusion_n": sum(c is not None for c in correct)}
    if "multi-reference" in modes:
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(str(it.get("group") or it["id"]), []).append(i)
        first = [idx[0] for idx in groups.values()]
        multi_refs = [[r for i in idx for r in _refs(items[i])] for idx in groups.values()]
        m, s, _ = _text_stats([preds[i] for i in first], multi_refs, first)
        metrics["multi-reference"], stats["multi-reference"] = m, s
        extras["n_images"] = len(groups)
    failures = [p for p in parsed if not p.ok]
    return TaskScore(metrics, stats, records, len(failures), _reasons(parsed), extras)


# --- pathvqa -----------------------------------------------------------------------------------


def _answer_type(item: Item) -> str:
    t = item.get("answer_type")
    return t if t in ("closed", "open") else ("closed" if pathvqa.is_closed(str(item.get("reference", ""))) else "open")


def score_pathvqa(items: list[Item], modes: Sequence[str]) -> TaskScore:
    preds = [str(it.get("prediction") or "") for it in items]
    refs = [str(it.get("reference") or "") for it in items]
    types = [_answer_type(it) for it in items]
    metrics: dict[str, dict[str, float]] = {}
    stats: dict[str, dict[str, Stat]] = {}
    per_mode: dict[str, list[dict]] = {}
    for mode in modes:
        scored = [pathvqa.score_item(p, r, t, mode) for p, r, t in zip(preds, refs, types, strict=True)]
        per_mode[mode] = scored
        result = pathvqa.compute(preds, refs, types, mode=mode)
        metrics[mode] = {name: result[name] for name in pathvqa.MODE_METRICS[mode]}
        stats[mode] = {}
        for name in pathvqa.MODE_METRICS[mode]:
            key = "closed_hit" if name == "closed_accuracy" else name
            stats[mode][name] = mean_stat([float(s[key]) if key in s else None for s in scored])
    primary = "llava-med" if "llava-med" in modes else modes[0]
    records, reasons = [], Counter()
    failures = 0
    for i, t in enumerate(types):
        scores = {mode: {k: v for k, v in per_mode[mode][i].items() if k not in ("closed", "unparsed")} for mode in modes}
        if t == "closed":
            # the first yes/no word; None exactly when the module counts the answer in closed_unparsed
            parsed = next((w for w in pathvqa.normalize(preds[i]).split() if w in ("yes", "no")), None)
            if parsed is None:
                failures += 1
                reasons["no yes/no in answer to a closed question"] += 1
            records.append({"parsed": parsed, "correct": bool(per_mode[primary][i]["closed_hit"]),
                            "answer_type": t, "scores": scores})
        else:
            records.append({"parsed": None, "correct": None, "answer_type": t, "scores": scores})
    extras = {"n_closed": types.count("closed"), "n_open": types.count("open"), "correct_mode": primary}
    return TaskScore(metrics, stats, records, failures, dict(reasons), extras)


# --- pathmmu -----------------------------------------------------------------------------------


def score_pathmmu(items: list[Item], modes: Sequence[str]) -> TaskScore:
    parsed, correct, records = [], [], []
    for it in items:
        options = it.get("options")
        if not options:
            raise InputError(f"PathMMU item {it.get('id')!r} has no options", record=it.get("id"),
                             fix='give "options": ["A) ...", "B) ...", ...]')
        answer = str(it.get("label") or it.get("reference") or "").strip().strip("()").upper()
        p = parse_choice(it.get("prediction"), options)
        parsed.append(p)
        correct.append(p.value == answer)
        records.append({"parsed": p.value, "correct": p.value == answer, **({"reason": p.reason} if p.reason else {})})
    metrics = {"strict": {"accuracy": float(np.mean(correct)) if correct else float("nan")}}
    stats = {"strict": {"accuracy": mean_stat([float(c) for c in correct])}}
    subsets = sorted({str(it["subset"]) for it in items if it.get("subset")})
    for subset in subsets:
        vals = [float(c) if it.get("subset") == subset else None for it, c in zip(items, correct, strict=True)]
        defined = [v for v in vals if v is not None]
        metrics["strict"][f"accuracy_{subset}"] = float(np.mean(defined))
        stats["strict"][f"accuracy_{subset}"] = mean_stat(vals)
    extras = {"unparsed_policy": "wrong and counted (never a random option)",
              "subset_n": dict(Counter(str(it.get("subset")) for it in items if it.get("subset")))}
    return TaskScore(metrics, stats, records, sum(not p.ok for p in parsed), _reasons(parsed), extras)


# --- conversation ------------------------------------------------------------------------------


def score_conversation(items: list[Item], modes: Sequence[str]) -> TaskScore:
    preds = [str(it.get("prediction") or "") for it in items]
    refs = [_refs(it) for it in items]
    tf = [token_f1.item_scores(p, r) for p, r in zip(preds, refs, strict=True)]
    rg = [rouge.item_scores(p, r if len(r) > 1 else r[0]) for p, r in zip(preds, refs, strict=True)]
    cols = {"token_f1": [t["token_f1"] for t in tf], "rougeL": [r["rougeL"] for r in rg],
            "rouge1": [r["rouge1"] for r in rg]}
    metrics = {"teacher-forced": {k: float(np.mean(v)) if v else float("nan") for k, v in cols.items()}}
    stats = {"teacher-forced": {k: mean_stat(v) for k, v in cols.items()}}
    records = [{"parsed": None, "correct": None, "scores": {k: cols[k][i] for k in cols}} for i in range(len(items))]
    return TaskScore(metrics, stats, records, 0, {}, {})


# --- registry ----------------------------------------------------------------------------------

register_task(Task(
    name="crc", description="CRC-VAL-HE-7K tissue typing (9 classes): macro and per-class P/R/F1",
    modes=("macro",), headline=(("macro", "f1", "CRC F1"), ("macro", "recall", "CRC recall")),
    max_new_tokens=32, scorer=score_crc, metric_modules=("classification",),
    config="classification", sources=("crc",), row_task="classification", to_items=single_turn_items,
    fields=("label",),
    parsing="class full name, code (ADI..TUM), case/spacing variants and synonyms; none or several -> unparsed",
))
register_task(Task(
    name="pcam", description="PatchCamelyon tumour detection (yes/no): accuracy, F1 of 'yes'",
    modes=("binary",), headline=(("binary", "accuracy", "PCam acc"),),
    max_new_tokens=24, scorer=score_pcam, metric_modules=("classification",),
    config="classification", sources=("pcam",), row_task="classification", to_items=single_turn_items,
    fields=("label",),
    parsing="first word yes/no, else a lone yes/no word, else (negated) cancer statements; otherwise unparsed",
))
register_task(Task(
    name="captioning", description="Bladder pathologist-level reports: BLEU-1, ROUGE-1/L, conclusion accuracy",
    modes=("per-caption", "multi-reference"),
    headline=(("per-caption", "bleu1", "Bladder BLEU-1"), ("per-caption", "rouge1", "Bladder ROUGE-1")),
    max_new_tokens=160, scorer=score_captioning, metric_modules=("bleu1", "rouge"),
    config="captioning", sources=("pathologist_level",), row_task="captioning", to_items=single_turn_items,
    fields=("label", "group"),
    parsing="grade = last 'high/low grade' anywhere, else 'normal'/'insufficient information' in the last sentence",
))
register_task(Task(
    name="pathvqa", description="PathVQA closed accuracy and open recall/F1/BLEU-1 in three named modes",
    modes=pathvqa.MODES,
    headline=(("llava-med", "closed_accuracy", "PathVQA closed"), ("llava-med", "open_recall", "PathVQA open recall")),
    max_new_tokens=32, scorer=score_pathvqa, metric_modules=("pathvqa",),
    config="vqa", sources=("pathvqa",), row_task="vqa", to_items=single_turn_items,
    fields=("answer_type",),
    parsing="closed answers need a yes/no word (reported as unparsed otherwise); each mode applies its own rule",
))
register_task(Task(
    name="pathmmu", description="PathMMU multiple choice: accuracy overall and per subset, unparsed = wrong",
    modes=("strict",), headline=(("strict", "accuracy", "PathMMU acc"),),
    max_new_tokens=32, scorer=score_pathmmu, metric_modules=(),
    fields=("options", "subset"),
    parsing="lone/leading/stated option letter, else the text of exactly one option; never a random guess",
))
register_task(Task(
    name="conversation", description="Multi-turn conversations, teacher-forced history: token F1, ROUGE-L",
    modes=("teacher-forced",), headline=(("teacher-forced", "token_f1", "Conv. token F1"),),
    max_new_tokens=256, scorer=score_conversation, metric_modules=("token_f1", "rouge"),
    config="conversation", sources=None, row_task="conversation", to_items=conversation_items,
))
