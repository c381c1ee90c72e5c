"""Read and write the leaderboard's requests and results repos through `huggingface_hub`."""

from __future__ import annotations

import json
import logging
from typing import Any

from pathenhanceds.errors import InputError
from pathinsight_models.hub import hub_api

from .requests import EvalRequest, check_results_record, requests_repo, results_repo

logger = logging.getLogger("pathinsight.leaderboard")


def _json_files(api: Any, repo_id: str) -> tuple[str | None, list[tuple[str, Any]]]:
    """(head sha, [(path, parsed JSON)]) of every `*.json` in a dataset repo; (None, []) if it is missing."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.repo_info(repo_id, repo_type="dataset")
    except RepositoryNotFoundError:
        return None, []
    out = []
    for sibling in sorted(info.siblings or [], key=lambda s: s.rfilename):
        if not sibling.rfilename.endswith(".json"):
            continue
        # Pinned to the head commit so one listing never mixes two states of the repo.
        local = hf_hub_download(repo_id, sibling.rfilename, repo_type="dataset", revision=info.sha, token=api.token)
        with open(local, encoding="utf-8") as fh:
            try:
                out.append((sibling.rfilename, json.load(fh)))
            except json.JSONDecodeError:
                logger.warning("skipping %s in %s: not JSON", sibling.rfilename, repo_id)
    return info.sha, out


def list_requests(leaderboard: str, *, api: Any = None, token: str | None = None) -> list[EvalRequest]:
    """Every request of the leaderboard, oldest submission first (unreadable files are skipped, logged)."""
    api = hub_api(api, token)
    _, files = _json_files(api, requests_repo(leaderboard))
    out = []
    for path, data in files:
        try:
            out.append(EvalRequest.from_dict(data, file=path))
        except (InputError, TypeError) as exc:
            logger.warning("skipping request %s: %s", path, exc)
    return sorted(out, key=lambda r: (r.submitted_time, r.path))


def list_results(leaderboard: str, *, api: Any = None, token: str | None = None) -> list[dict[str, Any]]:
    """Every results record of the leaderboard (each with its repo path under `_path`)."""
    api = hub_api(api, token)
    _, files = _json_files(api, results_repo(leaderboard))
    out = []
    for path, data in files:
        try:
            out.append({**check_results_record(data, file=path), "_path": path})
        except InputError as exc:
            logger.warning("skipping results file %s: %s", path, exc)
    return out


def write_request(
    request: EvalRequest, leaderboard: str, *, api: Any = None, token: str | None = None, message: str | None = None
) -> Any:
    """Create the requests repo if needed and commit `request` (replacing an earlier version of it)."""
    api = hub_api(api, token)
    repo = requests_repo(leaderboard)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    return api.upload_file(
        path_or_fileobj=request.to_json(),
        path_in_repo=request.path,
        repo_id=repo,
        repo_type="dataset",
        commit_message=message or f"{request.status}: {request.model}@{request.revision[:12]} ({request.precision})",
    )


def write_results(
    record: dict[str, Any], path: str, leaderboard: str, *, api: Any = None, token: str | None = None
) -> Any:
    """Create the results repo if needed and commit one results `record` at `path`."""
    api = hub_api(api, token)
    repo = results_repo(leaderboard)
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    body = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    return api.upload_file(path_or_fileobj=body, path_in_repo=path, repo_id=repo, repo_type="dataset",
                           commit_message=f"Add results of {record['config']['model_name']}")
