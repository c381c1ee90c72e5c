"""The dataset writer: parquet shards, dataset card, manifest, license (foreign formats: `pathenhanceds.formats`)."""
