"""Domain vocabulary shared by readers, selections, sample writers and evaluation.

The class names and answers here are what rows carry as `label` / assistant text, so every place that
reads, plans, writes or scores them imports them from this one module (data from
../shared/reference/sources.md and prompts.md).
"""

from __future__ import annotations

# NCT-CRC-HE-100K / CRC-VAL-HE-7K: folder code -> full name used in prompts and labels. The order is the
# Hub mirror's ClassLabel order (0..8).
CRC_CLASSES: dict[str, str] = {
    "ADI": "Adipose",
    "BACK": "Background",
    "DEB": "Debris",
    "LYM": "Lymphocytes",
    "MUC": "Mucus",
    "MUS": "Smooth Muscle",
    "NORM": "Normal Colon Mucosa",
    "STR": "Cancer-Associated Stroma",
    "TUM": "Colorectal Adenocarcinoma Epithelium",
}
CRC_CODES: tuple[str, ...] = tuple(CRC_CLASSES)
CRC_NAMES: tuple[str, ...] = tuple(CRC_CLASSES.values())

# Phrases (lower-case words) that name a CRC class in a free-text answer. Longer phrases win over the
# phrases they contain when parsing, so "cancer associated stroma" is stroma although it contains "cancer".
CRC_SYNONYMS: dict[str, tuple[str, ...]] = {
    "Adipose": ("adipose", "adipose tissue", "fat", "fatty tissue", "adipocyte", "adipocytes"),
    "Background": ("background", "slide background", "no tissue", "empty background"),
    "Debris": ("debris", "necrosis", "necrotic debris", "necrotic tissue", "cellular debris"),
    "Lymphocytes": ("lymphocytes", "lymphocyte", "lymphocytic", "lymphoid", "lymphocytic infiltrate",
                    "immune cells", "lymphoid tissue"),
    "Mucus": ("mucus", "mucin", "mucinous", "mucous"),
    "Smooth Muscle": ("smooth muscle", "muscle", "muscularis", "muscle tissue", "smooth muscle tissue"),
    "Normal Colon Mucosa": ("normal colon mucosa", "normal colonic mucosa", "normal mucosa", "colon mucosa",
                            "colonic mucosa", "mucosa", "normal", "normal colon"),
    "Cancer-Associated Stroma": ("cancer associated stroma", "tumor associated stroma",
                                 "tumour associated stroma", "stroma", "stromal", "tumor stroma",
                                 "tumour stroma", "desmoplastic stroma", "desmoplasia"),
    "Colorectal Adenocarcinoma Epithelium": (
        "colorectal adenocarcinoma epithelium", "adenocarcinoma epithelium", "colorectal adenocarcinoma",
        "adenocarcinoma", "tumor epithelium", "tumour epithelium", "tumor", "tumour", "cancer",
        "carcinoma", "colorectal cancer", "cancer epithelium", "malignant epithelium",
    ),
}

# Pathologist-level bladder reports: annotation `label` value -> grade name (3 rows are dropped).
BLADDER_GRADES: dict[int, str] = {0: "normal", 1: "low grade", 2: "high grade", 3: "insufficient information"}

# PCam: the assistant answer for a positive (1) and a negative (0) patch; row labels are "yes" / "no".
PCAM_YES = "Yes, this image contains cancerous cells."
PCAM_NO = "No, there are no cancerous cells in this image."
PCAM_LABELS: dict[int, str] = {0: "no", 1: "yes"}

__all__ = ["BLADDER_GRADES", "CRC_CLASSES", "CRC_CODES", "CRC_NAMES", "CRC_SYNONYMS", "PCAM_LABELS", "PCAM_NO",
           "PCAM_YES"]
