"""The search spaces of the paper and of the AutoMONAI thesis (hnas.pipeline.spaces; docs/references.md, "Search spaces")."""

import pytest

from hnas.errors import HnasError, SearchSpaceError
from hnas.pipeline.spaces import make_space
from hnas.search import Condition

from search.fakes import WordArchitecture

HPO = ["optimizer", "momentum", "initial_lr", "lr_scheduler", "weight_decay",
       "foreground_oversampling", "loss", "aug_factor"]
NAS = ["encoder_type", "model_scale", "base_features", "max_features", "activation",
       "normalization", "dropout_rate"]


def test_presets_hold_the_papers_parameters():
    words = WordArchitecture()
    assert list(make_space("hpo").names) == HPO
    assert list(make_space("hpo+nas").names) == HPO + NAS
    assert list(make_space("hpo+hnas", words).names) == HPO + ["dropout_rate", "architecture"]
    assert list(make_space("hnas", words).names) == ["dropout_rate", "architecture"]
    nas = make_space("hpo+nas")
    assert nas["dropout_rate"].default == 0.0
    assert make_space("hpo+hnas", words)["dropout_rate"].default == 0.2
    assert nas["momentum"].condition == Condition("optimizer", ("SGD",))
    assert nas["weight_decay"].log and not nas["aug_factor"].log
    assert (nas["max_features"].lower, nas["max_features"].upper) == (160, 640)
    assert nas["model_scale"].values == (0.5, 1.0, 1.5, 2.0)


def test_pipeline_presets_hold_the_theses_choices_around_nnunets_defaults():
    pipeline = make_space("pipeline")
    assert list(pipeline.names) == ["loss", "network_dims", "intensity_normalization", "spacing_factor"]
    assert list(make_space("hpo+pipeline").names) == HPO + ["network_dims", "intensity_normalization",
                                                            "spacing_factor"]
    assert pipeline.default_config() == {"loss": "DiceCE", "network_dims": "3d", "intensity_normalization": "nnunet",
                                         "spacing_factor": 1.0}
    assert pipeline["network_dims"].choices == ("3d", "2d")
    assert pipeline["intensity_normalization"].choices == ("nnunet", "percentile_zscore", "minmax")
    assert pipeline["spacing_factor"].values == (0.75, 1.0, 1.25, 1.5, 2.0)
    with pytest.raises(SearchSpaceError, match="has no architecture parameter"):
        make_space("pipeline", WordArchitecture())


def test_presets_refuse_a_missing_or_extra_architecture():
    with pytest.raises(SearchSpaceError, match="searches architectures and needs a grammar distribution"):
        make_space("hnas")
    with pytest.raises(SearchSpaceError, match="has no architecture parameter"):
        make_space("hpo", WordArchitecture())
    with pytest.raises(SearchSpaceError, match="unknown search space"):
        make_space("nas")
    assert issubclass(SearchSpaceError, HnasError)
