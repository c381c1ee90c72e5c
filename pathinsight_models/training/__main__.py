"""`python -m pathinsight_models.training --config RECIPE.yaml` (also under `accelerate launch -m`)."""

from pathinsight_models.training.cli import main

raise SystemExit(main())
