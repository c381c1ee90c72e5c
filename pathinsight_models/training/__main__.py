"""`python -m pathinsight_models.training [--config RECIPE.yaml] [--<field> <value> ...]` (also under
`accelerate launch -m`): the same arguments as `pathinsight train`."""

from pathinsight_models.cli.train import main

raise SystemExit(main())
