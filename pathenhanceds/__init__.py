"""PathEnhanceDS: build the PathInsight instruction dataset from raw public sources."""

__version__ = "0.1.0"

from .build import BuildResult, build  # noqa: E402
from .builder import PathEnhanceDS, PathEnhanceDSConfig  # noqa: E402

__all__ = ["BuildResult", "PathEnhanceDS", "PathEnhanceDSConfig", "__version__", "build"]
