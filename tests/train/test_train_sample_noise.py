"""--sample-noise: sharded sampling starts from one evenly spread Sobol set over the ranks."""
import pytest
import torch

from ringflow.collectives.threads import run_ranks
from ringflow.models.noise import standard_normal
from ringflow.models.rectified_flow import RectifiedFlow
from ringflow.train import config, evaluate
from ringflow.train.generate import sample_sharded


def still(x, t, y=None):
    """A velocity of zero: the sampler returns its starting noise unchanged."""
    return torch.zeros_like(x)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["iid", "sobol"])
def test_two_ranks_gather_one_start(kind):
    def body(comm):
        return sample_sharded(RectifiedFlow(), still, 10, (2,), comm, steps=2, cfg_scale=1.0,
                              num_classes=0, seed=4, noise=kind)

    got = run_ranks(2, body, timeout=30)
    assert torch.equal(got[0], got[1]) and got[0].shape == (10, 2)
    sobol = standard_normal((10, 2), kind="sobol", seed=4)
    assert torch.equal(got[0], sobol) == (kind == "sobol")       # iid does not follow Sobol


def test_the_flag_reaches_the_config_and_evaluate():
    assert config.parse([]).sample_noise == "iid"
    assert config.parse(["--sample-noise", "sobol"]).sample_noise == "sobol"
    assert evaluate.build_parser().parse_args(["r", "--sample-noise", "sobol"]).sample_noise == \
        "sobol"
    with pytest.raises(SystemExit):
        config.parse(["--sample-noise", "halton"])


def test_evaluate_refuses_sobol_for_a_sampler_that_draws_its_own(tmp_path):
    run = tmp_path / "vae"
    run.mkdir()
    config.save(config.parse(["--model", "vae", "--objective", "vae"]), run / "config.json")
    with pytest.raises(config.ConfigError, match="--sample-noise sobol"):
        evaluate.evaluate(evaluate.build_parser().parse_args([str(run), "--sample-noise",
                                                              "sobol"]))
