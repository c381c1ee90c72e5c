"""`python -m pathinsight_models.training --config RECIPE.yaml` (also under `accelerate launch -m`)."""

from pathinsight_models.cli.train import main

raise SystemExit(main())
