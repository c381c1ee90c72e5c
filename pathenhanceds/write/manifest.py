"""manifest.json: what went in (files, sizes, MD5s), what came out (counts, digest), what was skipped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..sources.base import Source, file_md5

_LIST_LIMIT = 200  # beyond this many files a source is summarised by one listing digest


def relative_to_source(path: str, roots: list[Path]) -> str:
    """Never store local absolute paths (they leak usernames and are refused by the Hub pusher)."""
    if not path:
        return path
    p = Path(path)
    for root in roots:
        try:
            return str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            continue
    return p.name


def describe_inputs(source: Source) -> dict[str, Any]:
    """A source's input files for the manifest: count, bytes and per-file sizes and MD5s (or one listing digest)."""
    files = source.input_files()
    root = source.path if source.path.is_dir() else source.path.parent
    entries = []
    for path in tqdm(files, desc=f"hashing {source.name} inputs", unit="file", leave=False,
                     disable=len(files) < 50):
        entries.append({"path": relative_to_source(str(path), [root]), "size": path.stat().st_size,
                        "md5": file_md5(path)})
    summary: dict[str, Any] = {"reader": source.name, "files": len(entries),
                               "bytes": sum(e["size"] for e in entries)}
    if len(entries) <= _LIST_LIMIT:
        summary["entries"] = entries
    else:
        listing = "\n".join(f"{e['path']}\t{e['size']}\t{e['md5']}" for e in entries)
        summary["listing_md5"] = hashlib.md5(listing.encode()).hexdigest()
    return summary


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    """Write manifest.json (indented, UTF-8)."""
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
