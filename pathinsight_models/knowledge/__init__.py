"""Knowledge-grounded explanations (GFT for H&E): cell graphs → GNN → integrated gradients → tables → Q&A.

Modules: `segment` (nuclei segmenters registry), `graph` (cell graphs), `gnn` (GraphSAGE + baseline),
`attribution` (captum IG), `tables`, `teacher` (teachers registry), `retrieval`, `build`
(`build_knowledge`), `explain_eval` (explanation scoring), `synthetic` (patches with known nuclei),
`demo` (`run_knowledge_demo`). See docs/knowledge.md.

Public API (imported lazily so `import pathinsight_models.knowledge` stays cheap): `build_knowledge`,
`run_knowledge_demo`, `score_explanations`, `write_synthetic_dataset`.
"""

from __future__ import annotations

from pathenhanceds.lazy import lazy_exports

_EXPORTS = {
    "build_knowledge": "pathinsight_models.knowledge.build",
    "run_knowledge_demo": "pathinsight_models.knowledge.demo",
    "score_explanations": "pathinsight_models.knowledge.explain_eval",
    "write_synthetic_dataset": "pathinsight_models.knowledge.synthetic",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
