"""Teachers: knowledge table + label → stage-1 (diagnosis) and stage-2 (location/feature) Q&A.

- `template` (offline default): deterministic sentences built only from the table.
- `hf:MODEL`: a local `transformers` causal LM (directory or cached Hub id; no remote code) rewrites
  each template answer, greedy decoding.
- `openai:URL#MODEL`: any OpenAI-compatible chat-completions endpoint (`URL` up to `/v1`) rewrites
  them; the key comes from the environment variable `OPENAI_API_KEY` only and is never written.

Every rewrite passes `grounded()`: it must keep the diagnosis, name no other class, and name only
features and quadrants the table holds; otherwise the template answer is kept. Each rewrite's
prompt, model, raw output and verdict are returned as records (the build writes them to
`teacher.jsonl`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathenhanceds.errors import InputError
from pathenhanceds.registry import Registry

from .graph import FEATURE_WORDS
from .tables import densest_quadrant, named_terms, table_vocabulary

STAGE1_QUESTION = "What is the diagnosis for this histopathology image?"
STAGE2_QUESTIONS = (
    "Which region of the image and which nuclear features support the diagnosis?",
    "Which relations between neighbouring nuclei matter most for the diagnosis?",
    "Where are the nuclei most densely packed?",
)
Turns = list[tuple[str, str]]


@dataclass
class QA:
    """One image's Q&A for both stages plus the rewrite records (empty for the template teacher)."""

    stage1: Turns
    stage2: Turns
    records: list[dict[str, Any]] = field(default_factory=list)


def _traits(features: list[str], directions: list[str]) -> str:
    """'high area and low solidity'; orientation has no high/low (sin/cos of 2θ), and is said once."""
    said: list[str] = []
    for feature, direction in zip(features, directions, strict=True):
        word = FEATURE_WORDS[feature]
        phrase = f"a distinctive {word}" if word == "orientation" else f"{direction} {word}"
        if phrase not in said:
            said.append(phrase)
    return " and ".join(said)


def template_qa(table: dict[str, Any]) -> QA:
    """Deterministic Q&A from one table (the diagnosis is the table's label)."""
    label = table["label"]
    stage1 = [("user", STAGE1_QUESTION), ("assistant", f"The diagnosis is {label}.")]
    stage2: Turns = []
    explained = table["explained_class"] == label and table["top_nodes"]
    if explained:
        node = table["top_nodes"][0]
        traits = _traits(node["features"], node["directions"])
        stage2 += [("user", STAGE2_QUESTIONS[0]),
                   ("assistant", f"The diagnosis is {label}. The most important nuclei lie in the "
                                 f"{node['quadrant']} quadrant, where they show {traits}.")]
        if table["top_edges"]:
            edge = table["top_edges"][0]
            traits = _traits(edge["features"], edge["directions"])
            stage2 += [("user", STAGE2_QUESTIONS[1]),
                       ("assistant", f"Neighbouring nuclei in the {edge['quadrant']} quadrant, joined by edges "
                                     f"with {traits}.")]
    if table["nodes"]:
        q = densest_quadrant(table)
        stage2 += [("user", STAGE2_QUESTIONS[2]),
                   ("assistant", f"In the {q} quadrant, with {table['node_density'][q]:.1f} nuclei per "
                                 f"10,000 square pixels.")]
    if not explained:  # no explanation for a class the GNN did not predict: state the diagnosis only
        stage2 = [("user", STAGE2_QUESTIONS[0]), ("assistant", f"The diagnosis is {label}."), *stage2]
    return QA(stage1, stage2)


def _mentions(text: str, name: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(name.lower()) + r"(?![\w-])", text.lower()) is not None


def grounded(answer: str, table: dict[str, Any], *, require_label: bool) -> tuple[bool, str]:
    """Whether `answer` names only what the table holds (and keeps the diagnosis when required)."""
    vocab = table_vocabulary(table)
    terms = named_terms(answer)
    extra_f = terms["features"] - vocab["features"]
    if extra_f:
        return False, f"names features not in the table: {sorted(extra_f)}"
    extra_q = terms["quadrants"] - vocab["quadrants"]
    if extra_q:
        return False, f"names quadrants not in the table: {sorted(extra_q)}"
    label = table["label"]
    others = [c for c in table["classes"] if c != label and not _mentions(label, c) and _mentions(answer, c)]
    if others:
        return False, f"names another class: {others}"
    if require_label and not _mentions(answer, label):
        return False, "drops the diagnosis"
    return True, "ok"


def rewrite_prompt(question: str, answer: str, table: dict[str, Any]) -> str:
    """The instruction an LLM teacher gets for one answer."""
    vocab = table_vocabulary(table)
    return (
        "Rewrite the answer about a histopathology image in fluent clinical English. Keep every fact and add "
        f"none. The diagnosis is {table['label']}. Mention only these features: "
        f"{', '.join(sorted(vocab['features'])) or 'none'}; only these regions: "
        f"{', '.join(q + ' quadrant' for q in sorted(vocab['quadrants'])) or 'none'}.\n"
        f"Question: {question}\nAnswer: {answer}\nRewritten answer:"
    )


class RewritingTeacher:
    """Template Q&A, each answer rewritten by `generate(prompt) -> text` and checked."""

    def __init__(self, generate: Callable[[str], str], model: str):
        self.generate = generate
        self.model = model

    def __call__(self, table: dict[str, Any]) -> QA:
        """Q&A for one table; rejected rewrites fall back to the template answer."""
        qa = template_qa(table)
        records: list[dict[str, Any]] = []

        def rewrite(turns: Turns, stage: int) -> Turns:
            out: Turns = []
            for k in range(0, len(turns), 2):
                (_, question), (_, answer) = turns[k], turns[k + 1]
                prompt = rewrite_prompt(question, answer, table)
                raw = self.generate(prompt).strip()
                ok, why = grounded(raw, table, require_label=_mentions(answer, table["label"])) if raw else (
                    False, "empty")
                records.append({"id": table["id"], "stage": stage, "turn": k // 2, "model": self.model,
                                "prompt": prompt, "output": raw, "accepted": ok, "reason": why})
                out += [("user", question), ("assistant", raw if ok else answer)]
            return out

        return QA(rewrite(qa.stage1, 1), rewrite(qa.stage2, 2), records)


def _template(_: str = "") -> Callable[[dict[str, Any]], QA]:
    return template_qa


def _hf(model: str) -> RewritingTeacher:
    """Local transformers causal LM, greedy decoding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not model:
        raise InputError("hf teacher needs a model", fix="use --teacher hf:MODEL_DIR_OR_ID")
    try:
        tok = AutoTokenizer.from_pretrained(model)
        lm = AutoModelForCausalLM.from_pretrained(model).eval()
    except OSError as exc:
        raise InputError(f"cannot load the teacher model: {exc}", file=model,
                         fix="pass a local model directory or a cached Hub id") from exc

    def generate(prompt: str) -> str:
        enc = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            out = lm.generate(**enc, max_new_tokens=64, do_sample=False,
                              pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    local = Path(model).expanduser()
    return RewritingTeacher(generate, f"hf:{local.name if local.exists() else model}")  # no local paths in records


def _openai(spec: str) -> RewritingTeacher:
    """OpenAI-compatible chat completions at URL#MODEL; temperature 0."""
    import urllib.error
    import urllib.request

    url, sep, model = spec.partition("#")
    if not sep or not url or not model:
        raise InputError(f"bad openai teacher {spec!r}", fix="use --teacher openai:http://host:port/v1#MODEL")
    endpoint = url.rstrip("/") + "/chat/completions"

    def generate(prompt: str) -> str:
        body = json.dumps({"model": model, "temperature": 0,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get("OPENAI_API_KEY")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                reply = json.loads(response.read())
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as exc:
            raise InputError(f"teacher endpoint failed: {exc}", file=endpoint,
                             fix="check the URL, the model name and OPENAI_API_KEY") from None
        return str(reply["choices"][0]["message"]["content"] or "")

    return RewritingTeacher(generate, f"openai:{url}#{model}")


TEACHERS: Registry[Callable[[str], Callable[[dict[str, Any]], QA]]] = Registry(
    "teacher", fix="use --teacher template, hf:MODEL or openai:URL#MODEL ({names})")
TEACHERS.register("template", _template)
TEACHERS.register("hf", _hf)
TEACHERS.register("openai", _openai)


def list_teachers() -> list[str]:
    """Registered teacher kinds."""
    return TEACHERS.names()


def get_teacher(spec: str = "template") -> Callable[[dict[str, Any]], QA]:
    """A teacher from `template`, `hf:MODEL` or `openai:URL#MODEL`."""
    kind, _, arg = spec.partition(":")
    return TEACHERS.get(kind)(arg)
