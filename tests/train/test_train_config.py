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
    (["--model", "vae", "--objective", "vae", "--sample-noise", "sobol"],
     ["--sample-noise sobol", "--objective vae", "--sample-noise iid"]),
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


@pytest.mark.parametrize("flags, words", [
    (["--batch-size", "0"], ["--batch-size must be at least 1", "got 0"]),
    (["--batch-size", "-4"], ["--batch-size must be at least 1", "got -4"]),
    (["--threads", "-1"], ["--threads must be 0", "got -1"]),
    (["--max-nonfinite-steps", "0"], ["--max-nonfinite-steps must be at least 1", "got 0"]),
    (["--config", "no/such/file.json"], ["--config no/such/file.json: cannot read it",
                                         "JSON or YAML"]),
    (["--model-kwargs", '{"hidden_size": -32}'], ["hidden_size must be a positive number",
                                                  "got -32"]),
    (["--model-kwargs", '{"depth": 0}'], ["depth must be a positive number", "got 0"]),
    (["--model", "unet", "--model-kwargs", '{"channel_mults": [1, -2]}'],
     ["channel_mults must be a list of positive numbers", "[1, -2]"]),
])
def test_bad_numbers_and_files_are_clean_errors(flags, words, capsys, tmp_path):
    rc = loop.main(["--preset", "tiny", "--out", str(tmp_path / "r"), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ringflow.train: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    assert not runtime.is_initialized() and not (tmp_path / "r" / "checkpoints").exists()


def test_config_file_that_does_not_parse_names_the_file(capsys, tmp_path):
    for name, text, words in [("c.json", "{steps: 3", "not valid JSON"),
                              ("c.yaml", "steps: [3", "not valid YAML")]:
        (tmp_path / name).write_text(text)
        assert loop.main(["--config", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"--config {tmp_path / name}: {words}" in err and "Traceback" not in err, err
