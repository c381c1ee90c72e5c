"""Shared pytest setup.

`support.hub_fixtures` starts the loopback test Hub and sets HF_ENDPOINT/HF_HOME/HF_TOKEN before any test module
imports huggingface_hub/datasets/transformers, so keep those imports out of this file.
"""

pytest_plugins = ["support.hub_fixtures"]

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sample_sources(tmp_path_factory):
    """The synthetic raw-source tree (`pathinsight data sample`), written once per session."""
    from pathenhanceds.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("sample") / "raw", seed=0)


@pytest.fixture(scope="session")
def sample_build(sample_sources, tmp_path_factory):
    """PathEnhanceDS built from the sample with the default recipe (a `BuildResult`)."""
    from pathenhanceds import build

    return build(sample_sources, tmp_path_factory.mktemp("built") / "pathenhanceds", seed=0)
