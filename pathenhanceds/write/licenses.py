"""Dataset licence from the sources' licences: the most restrictive wins (pure)."""

from __future__ import annotations

# Ordered from least to most restrictive; anything else makes the dataset licence "other".
_ORDER = ["cc0-1.0", "mit", "apache-2.0", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-4.0",
          "cc-by-nc-sa-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0"]  # ND last: no adapted material at all


def dataset_license(licenses: list[str]) -> str:
    """The license of a build mixing sources with these licenses (the most restrictive one, or "other")."""
    ids = [lic.strip().lower() for lic in licenses]
    if not ids:
        return "other"
    if any(i not in _ORDER for i in ids):
        return "other"
    return max(ids, key=_ORDER.index)


def is_non_commercial(licenses: list[str]) -> bool:
    """Whether any of the licenses forbids commercial use."""
    return any("nc" in lic.lower().split("-") for lic in licenses)


def is_no_derivatives(licenses: list[str]) -> bool:
    """Whether any of the licenses forbids sharing adapted material (a CC "ND" term)."""
    return any("nd" in lic.lower().split("-") for lic in licenses)
