"""Submit a model to a PathEnhanceDS leaderboard (same as `pathinsight submit`).

    python hub_scripts/submit.py --model ORG/NAME --leaderboard ORG/LB [--revision REV] [--precision float32]
"""

from __future__ import annotations

import sys

from pathinsight_models.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["submit", *sys.argv[1:]]))
