"""--standardize: vector data trained as z-scores, samples and grids back in data coordinates."""
import json

import pytest
import torch

from ringflow.train import checks, config, evaluate, loop
from ringflow.train.standardize import Standardized


def test_encode_gives_z_scores_and_decode_inverts_it():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=g) * torch.tensor([3.0, 0.2]) + 5
    space = Standardized.of(x)
    z = space.encode(x)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(0), torch.ones(2), atol=1e-5)
    assert torch.allclose(space.decode(z), x, atol=1e-5) and space.shape == (2,)


def test_bad_data_names_the_problem():
    with pytest.raises(ValueError, match="vectors"):
        Standardized.of(torch.zeros(4, 1, 8, 8))
    with pytest.raises(ValueError, match="constant"):
        Standardized.of(torch.stack([torch.arange(5.0), torch.ones(5)], 1))


@pytest.mark.parametrize("argv, words", [
    (["--standardize", "true", "--latent", "runs/x"], ["--standardize", "--latent"]),
])
def test_validate_rejects_with_the_fix(argv, words):
    with pytest.raises(config.ConfigError) as err:
        checks.validate(config.parse(argv), world_size=1)
    for w in words:
        assert w in str(err.value)


def test_images_are_refused(capsys, tmp_path):
    assert loop.main(["--preset", "tiny", "--standardize", "true", "--out", str(tmp_path)]) == 2
    assert "drop --standardize" in capsys.readouterr().err


def test_run_samples_and_evaluates_in_data_coordinates(tmp_path):
    out = tmp_path / "moons"
    argv = ["--preset", "moons-mlp", "--steps", "30", "--progress", "false", "--threads", "1",
            "--sample-every", "0", "--num-samples", "64", "--out", str(out)]
    assert loop.main(argv) == 0
    assert json.loads((out / "config.json").read_text())["standardize"] is True
    result = evaluate.evaluate(evaluate.build_parser().parse_args(
        [str(out), "--num-samples", "400", "--sample-steps", "10"]))
    # even 30 steps place samples on the data's scale (z-scores would score ~ the data's std)
    assert result["sliced_w2"] < 0.5, result
    with pytest.raises(config.ConfigError, match="--nll-examples"):
        evaluate.evaluate(evaluate.build_parser().parse_args([str(out), "--nll-examples", "8"]))


def test_resume_refuses_a_checkpoint_trained_in_other_coordinates(capsys, tmp_path):
    argv = ["--preset", "moons-mlp", "--steps", "4", "--progress", "false", "--threads", "1",
            "--sample-every", "0", "--num-samples", "8", "--out", str(tmp_path)]
    assert loop.main(argv + ["--standardize", "false"]) == 0
    assert loop.main(argv[:3] + ["8"] + argv[4:]) == 2                # the preset: z-scores
    assert "standardize: checkpoint has False, this run has True" in capsys.readouterr().err
