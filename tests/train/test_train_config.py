"""The config dataclass, its CLI, presets and files, and the errors a user sees before launch."""
import json

import pytest

from ringflow import runtime
from ringflow.train import checks, config, loop


def test_precedence_defaults_preset_file_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: tiny\nsteps: 40\nlr: 0.002\n")
    cfg = config.parse(["--config", str(f), "--lr", "0.003", "--progress", "true"])
    assert cfg.batch_size == config.PRESETS["tiny"]["batch_size"]      # from the preset
    assert cfg.steps == 40                                               # file over preset
    assert cfg.lr == 0.003 and cfg.progress is True                      # flags over file
    assert cfg.objective == config.TrainConfig().objective               # untouched default


def test_json_config_round_trips_through_save(tmp_path):
    cfg = config.parse(["--preset", "moons-mlp", "--model-kwargs", '{"hidden": 8}'])
    config.save(cfg, tmp_path / "config.json")
    back = config.parse(["--config", str(tmp_path / "config.json")])
    assert back == cfg and back.model_kwargs == {"hidden": 8}


def test_resume_flag_without_value_means_must():
    assert config.parse(["--resume"]).resume == "must"
    assert config.parse([]).resume == "auto"


@pytest.mark.parametrize("argv, words", [
    (["--objective", "nice"], ["normalizing flow", "--model nice", "rectified_flow"]),
    (["--model", "realnvp"], ["--objective realnvp"]),
    (["--data", "no-such-set"], ["no-such-set", "digits", "image folder"]),
    (["--batch-size", "30"], ["30 % 4 = 2", "use 28 or 32"]),
    (["--batch-size", "32", "--grad-accum", "3"], ["--grad-accum 3"]),
    (["--ema-decay", "1.0"], ["--ema-decay must be in [0, 1)"]),
    (["--parallel", "zero2", "--compress", "bf16"], ["--parallel ddp"]),
    (["--transport", "mpi"], ["mpirun"]),
])
def test_validate_rejects_with_the_fix(argv, words):
    with pytest.raises(config.ConfigError) as err:
        checks.validate(config.parse(argv), world_size=4, launcher="torchrun")
    for w in words:
        assert w in str(err.value)


def test_unknown_and_mistyped_fields_name_their_source(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(config.ConfigError, match="config file: unknown field 'stepz'"):
        config.parse(["--config", str(f)])
    f.write_text(json.dumps({"steps": "many"}))
    with pytest.raises(config.ConfigError, match="steps must be int"):
        config.parse(["--config", str(f)])


def test_points_data_needs_a_vector_network():
    cfg = config.parse(["--data", "moons", "--batch-size", "8"])
    with pytest.raises(config.ConfigError, match="--model mlp"):
        checks.validate(cfg, 1, data_shape=(1000, 2))


def test_cli_errors_exit_2_before_any_process_group(monkeypatch, capsys, tmp_path):
    # as rank 0 of a 3-rank torchrun job: the batch of 16 cannot be split
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    rc = loop.main(["--preset", "tiny", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "ringflow.train: error: --batch-size 16" in err and "15 or 18" in err
    assert not runtime.is_initialized()
    monkeypatch.setenv("RANK", "1")                  # other ranks stay quiet
    assert loop.main(["--preset", "tiny", "--objective", "nice"]) == 2
    assert capsys.readouterr().err == ""


def test_bad_network_arguments_are_config_errors(capsys, tmp_path):
    rc = loop.main(["--preset", "tiny", "--model-kwargs", '{"wings": 2}', "--out", str(tmp_path)])
    assert rc == 2 and "--model dit with --model-kwargs {'wings': 2}" in capsys.readouterr().err
    assert not runtime.is_initialized()


def test_resume_must_without_checkpoints_fails_early(capsys, tmp_path):
    assert loop.main(["--preset", "tiny", "--resume", "--out", str(tmp_path)]) == 2
    assert "holds no checkpoints" in capsys.readouterr().err
