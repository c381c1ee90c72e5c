"""Export: parquet shards, dataset card, manifest."""
