"""What a run shows: log lines where there is no terminal, loss.png, sample grids and
scatters, and the --help of ringflow.train and ringflow.evaluate."""

import pytest
import torch

from ringflow.train import checkpoint as ckpt
from ringflow.train import config, evaluate, loop, plots
from ringflow.train.generate import grid_columns, grid_labels
from ringflow.train.log import print_every

TINY = ["--preset", "tiny", "--steps", "6"]


def test_without_a_terminal_the_bar_becomes_periodic_lines(tmp_path, capsys):
    assert loop.main(TINY + ["--progress", "true", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err                  # pytest's stderr is not a terminal
    assert "\r" not in err and "step/s" not in err, err     # no tqdm bar
    lines = [ln for ln in err.splitlines() if ln.startswith("step ")]
    assert [ln.split(":")[0] for ln in lines] == ["step 2/6", "step 4/6", "step 6/6"], err
    assert all(" img/s, lr " in ln and ": loss " in ln for ln in lines), lines
    assert print_every(3000, 10) == 150 and print_every(6, 2) == 2 and print_every(95, 10) == 10


def _labels(fig):
    fig.canvas.draw()
    ax = fig.axes[0]
    return [t.get_text() for t in ax.get_yticklabels(which="both") if t.get_text()]


@pytest.mark.parametrize("losses", [[1.70, 1.665, 1.64, 1.62], [1.7, 0.9, 0.3, 0.08, 0.05]])
def test_loss_curve_has_plain_labels_a_title_and_resume_markers(losses):
    rows = [{"step": 10 * (i + 1), "loss": v} for i, v in enumerate(losses)]
    fig = plots.loss_figure(rows, "dit + rectified_flow on digits, 2 rank(s)", resumed_at=[20])
    labels = _labels(fig)
    assert len(labels) >= 2, labels
    for text in labels:                            # "1.65", "0.1": never "1.665x10^0"
        float(text)
    ax = fig.axes[0]
    assert ax.get_title() == "dit + rectified_flow on digits, 2 rank(s)"
    marks = [ln for ln in ax.get_lines() if ln.get_label() == "resumed from a checkpoint"]
    assert len(marks) == 1 and list(marks[0].get_xdata()) == [20, 20]


def test_trainer_titles_the_curve_and_marks_where_it_resumed(tmp_path, monkeypatch):
    seen, real = [], plots.save_loss_curve
    monkeypatch.setattr(plots, "save_loss_curve",
                        lambda *a, **kw: seen.append(a) or real(*a, **kw))
    assert loop.main(TINY + ["--steps", "3", "--out", str(tmp_path)]) == 0
    assert loop.main(TINY + ["--out", str(tmp_path)]) == 0
    assert seen[0][2:] == ("dit + rectified_flow on digits, 1 rank(s)", [])
    assert seen[1][2:] == ("dit + rectified_flow on digits, 1 rank(s)", [3])
    state = ckpt.read(ckpt.step_dir(tmp_path / "checkpoints", 6), "state.json")
    assert state["resumed_at"] == [3]              # carried by checkpoints: later resumes add


def test_grid_shape_follows_the_count():
    assert [grid_columns(n) for n in (1, 2, 6, 7, 8, 10, 100, 1000)] == \
        [1, 2, 3, 3, 4, 5, 10, 40]
    grid = plots.image_grid(torch.zeros(8, 1, 8, 8), scale=1)
    assert grid.shape[:2] == (2 * 9 + 1, 4 * 9 + 1)           # 2 rows of 4, 1-pixel gutters
    # labels laid out for the n kept samples, whatever the padding over ranks
    assert grid_labels(8, 10).tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert torch.equal(grid_labels(100, 10, total=102)[:100], grid_labels(100, 10))


def test_class_labels_are_written_on_each_row():
    fig = plots.labelled_grid_figure(torch.zeros(8, 1, 8, 8), grid_labels(8, 10))
    assert [t.get_text() for t in fig.axes[0].texts] == ["class 0", "class 1"]
    mixed = plots.labelled_grid_figure(torch.zeros(4, 1, 8, 8), torch.tensor([3, 1, 4, 1]))
    assert [t.get_text() for t in mixed.axes[0].texts] == ["3", "1", "4", "1"]   # per image


def test_trainer_grid_is_labelled_and_points_sit_beside_the_data(tmp_path, monkeypatch):
    seen, real = [], plots.save_samples
    monkeypatch.setattr(plots, "save_samples",
                        lambda x, path, **kw: seen.append((x, kw)) or real(x, path, **kw))
    assert loop.main(TINY + ["--out", str(tmp_path / "digits")]) == 0
    x, kw = seen[-1]
    assert x.shape == (8, 1, 8, 8) and kw["labels"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert loop.main(["--preset", "moons-mlp", "--steps", "2", "--batch-size", "16",
                      "--num-samples", "32", "--sample-steps", "2", "--progress", "false",
                      "--out", str(tmp_path / "moons")]) == 0
    x, kw = seen[-1]
    assert x.shape == (32, 2) and kw["reference"].shape[1] == 2 and kw["labels"] is None
    fig = plots.scatter_figure(x, kw["reference"])
    assert [ax.get_title().split(" (")[0] for ax in fig.axes] == ["data", "samples"]
    colours = [tuple(ax.collections[0].get_facecolor()[0]) for ax in fig.axes]
    assert colours[0] != colours[1]
    assert (tmp_path / "moons" / "samples" / "final.png").is_file()


def test_help_lists_the_registries_and_evaluate_says_a_whole_sentence():
    from ringflow.data import DATASETS
    from ringflow.models import NETWORKS, OBJECTIVES
    text = " ".join(config.build_parser().format_help().split())
    for name in [*NETWORKS, *OBJECTIVES, *DATASETS]:
        assert f" {name}," in text or f" {name} (default" in text, name
    parser = evaluate.build_parser()
    assert parser.description.endswith("RUN/samples/eval.png.")
    assert parser.description.startswith("Sample from a run's newest checkpoint on every rank")
    assert "torchrun --nproc_per_node=2 -m ringflow.evaluate" in parser.format_help()


def test_evaluate_picture_shows_one_class_a_row(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(plots, "save_samples", lambda x, path, **kw: seen.append((x, kw)))
    evaluate.save_picture(torch.zeros(1000, 1, 8, 8), None, 10, tmp_path / "eval.png")
    x, kw = seen[0]
    assert x.shape[0] == 100 and kw["nrow"] == 10
    assert kw["labels"].tolist() == [c for c in range(10) for _ in range(10)]
