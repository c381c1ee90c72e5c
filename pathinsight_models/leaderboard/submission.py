"""Submit a Hub model to a leaderboard: validate it, then write a PENDING request.

Checked before anything is written: the repo and revision exist and are public, the card exists and
declares a licence, the weights are safetensors, and for an adapter its `adapter_config.json` names
a base model that exists on the Hub (not a local path). The request pins the commit sha, so the
evaluation runs on exactly what was submitted even if the repo moves on.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.hub import check_repo_id, hub_api, is_local_path

from .requests import ACTIVE, PRECISIONS, WEIGHT_TYPES, EvalRequest
from .store import list_requests, write_request

_PICKLE = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _model_info(api: Any, repo_id: str, revision: str | None, what: str) -> Any:
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        return api.model_info(repo_id, revision=revision)
    except RevisionNotFoundError:
        raise InputError(f"{what} {repo_id} has no revision {revision!r}", fix="pass an existing branch, tag or sha") from None
    except RepositoryNotFoundError:
        raise InputError(f"{what} {repo_id} is not on the Hub (or is private)",
                         fix="push it first (`pathinsight push model`) and make it public") from None


def _adapter_base(api: Any, model: str, sha: str) -> str:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(model, "adapter_config.json", revision=sha, token=api.token)
    with open(path, encoding="utf-8") as fh:
        try:
            config = json.load(fh)
        except json.JSONDecodeError:
            raise InputError(f"{model}: adapter_config.json is not valid JSON", file="adapter_config.json") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base or is_local_path(base):
        raise InputError(
            f"{model}: adapter_config.json names no Hub base model ({base!r})",
            fix="republish with `pathinsight push model --base-model-id ORG/NAME`",
        )
    check_repo_id(base, "base model id")
    _model_info(api, base, None, "base model")
    return base


def validate_model(model: str, *, revision: str | None = None, api: Any = None, token: str | None = None) -> dict[str, Any]:
    """Facts a request needs (sha, weight type, base model, licence, method), or an InputError."""
    api = hub_api(api, token)
    check_repo_id(model, "model id")
    info = _model_info(api, model, revision, "model")
    if getattr(info, "private", False):
        raise InputError(f"{model} is private: the leaderboard cannot evaluate it", fix="make the repo public")
    files = {s.rfilename for s in info.siblings or []}
    card = info.card_data.to_dict() if getattr(info, "card_data", None) else {}
    if "README.md" not in files or not card:
        raise InputError(f"{model} has no model card (README.md with YAML metadata)",
                         fix="publish with `pathinsight push model`, which writes the card")
    license_ = card.get("license")
    if not license_:
        raise InputError(f"{model}: the model card declares no licence", fix="add `license:` to the card's YAML")
    adapter = "adapter_config.json" in files
    safe = [f for f in files if f.endswith(".safetensors") and "/" not in f]
    if not safe:
        pickled = [f for f in files if f.endswith(_PICKLE)]
        raise InputError(
            f"{model} has no safetensors weights" + (f" (found {pickled[0]}, a pickle format)" if pickled else ""),
            fix="publish safetensors weights (`pathinsight push model` does)",
        )
    training = card.get("training") if isinstance(card.get("training"), dict) else {}
    base = card.get("base_model")
    base = base[0] if isinstance(base, list) and base else base
    if adapter:
        weight_type, base = "Adapter", _adapter_base(api, model, info.sha)
    else:
        weight_type = training.get("weight_type") if training.get("weight_type") in WEIGHT_TYPES else "Original"
        if weight_type == "Adapter":  # the card says adapter but there is no adapter_config.json
            raise InputError(f"{model}: card says adapter but the repo has no adapter_config.json")
    return {
        "revision": info.sha,
        "weight_type": weight_type,
        "base_model": base if isinstance(base, str) else None,
        "license": str(license_[0] if isinstance(license_, list) else license_),
        "method": training.get("method"),
    }


def submit(
    model: str,
    leaderboard: str,
    *,
    revision: str | None = None,
    precision: str = "float32",
    token: str | None = None,
    api: Any = None,
) -> EvalRequest:
    """Validate `model` and add a PENDING request for it to `<leaderboard>-requests`; returns the request."""
    api = hub_api(api, token)
    check_repo_id(leaderboard, "leaderboard id")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}", fix=f"one of {', '.join(PRECISIONS)}")
    facts = validate_model(model, revision=revision, api=api)
    for existing in list_requests(leaderboard, api=api):
        if (existing.model, existing.revision, existing.precision) == (model, facts["revision"], precision) and (
            existing.status in ACTIVE
        ):
            raise InputError(
                f"{model}@{facts['revision'][:12]} ({precision}) was already submitted (status {existing.status})",
                fix="push a new revision, or wait: FAILED requests can be resubmitted",
            )
    request = EvalRequest(model=model, precision=precision, **facts)
    write_request(request, leaderboard, api=api, message=f"Submit {model}@{request.revision[:12]} ({precision})")
    return request


def redact(text: str, token: str | None) -> str:
    """Error text safe to store publicly: no token, no bearer header value."""
    if token:
        text = text.replace(token, "***")
    return re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text)
