"""An autoencoder trained by ``ringflow.train --model vae`` and a generative model trained on
its latents (``--latent``): reconstruction against a trivial reconstruction, the cache keyed by
the weights' checksum, unit-variance latents, decoded grids, bitwise resume, two ranks
encoding shares that match one process encoding everything, latent runs under torchrun and
mpirun with DataParallel and fsdp that resume bitwise across the two launchers, and the latent
presets' brief quality bar."""
import json

import pytest
import torch

from ringflow.data import load_dataset
from ringflow.models import psnr
from ringflow.train import checkpoint as ckpt
from ringflow.train import config, evaluate, latent, loop, plots
from tests.launchers import run_mpirun, run_torchrun

VAE = ["--model", "vae", "--objective", "vae", "--data", "digits", "--class-cond", "false",
       "--model-kwargs", '{"latent_channels": 4, "factor": 2, "base_channels": 8, '
       '"num_res_blocks": 1}', "--steps", "300", "--batch-size", "64", "--lr", "2e-3",
       "--lr-schedule", "cosine", "--sample-every", "0", "--num-samples", "8", "--threads", "1",
       "--progress", "false"]
TINY_LATENT = ["--preset", "tiny", "--data", "digits", "--steps", "6"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    assert loop.main(VAE + ["--out", str(out)]) == 0
    return out


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RINGFLOW_CACHE", str(tmp_path / "cache"))


def test_vae_reconstructs_far_better_than_the_mean_image(vae_run):
    x, _ = load_dataset("digits")
    space = latent.load_space(str(vae_run))
    recon = space.vae.decode(space.encode(x)).clamp(-1, 1)
    trivial = x.mean(0, keepdim=True).expand_as(x)            # the best input-blind guess
    gain = psnr(recon, x).mean() - psnr(trivial, x).mean()
    assert gain > 6.0, f"only {gain:.1f} dB over the mean image"


def test_evaluate_reports_reconstruction_psnr_and_fd(vae_run, tmp_path):
    result = evaluate.main([str(vae_run), "--num-samples", "200", "--classifier-epochs", "3",
                            "--out", str(tmp_path / "eval.json")])
    assert result == 0
    got = json.loads((tmp_path / "eval.json").read_text())
    x, _ = load_dataset("digits")
    space = latent.load_space(str(vae_run))
    want = psnr(space.vae.decode(space.encode(x[:200])).clamp(-1, 1), x[:200]).mean()
    assert got["recon_psnr"] == pytest.approx(want.item(), rel=1e-5)
    assert got["recon_fd"] >= 0


def test_latent_run_trains_on_unit_variance_latents_and_decodes_its_grid(vae_run, tmp_path,
                                                                         monkeypatch):
    seen, real = [], plots.save_samples
    monkeypatch.setattr(plots, "save_samples",
                        lambda x, path, **kw: seen.append(x) or real(x, path, **kw))
    seen_x = []
    real_build = loop.build_run

    def build_run(*args, **kwargs):
        run = real_build(*args, **kwargs)
        seen_x.append(run.x)
        return run
    monkeypatch.setattr(loop, "build_run", build_run)
    assert loop.main(TINY_LATENT + ["--latent", str(vae_run), "--out", str(tmp_path / "a")]) == 0
    z = seen_x[0]
    assert z.shape == (1797, 4, 4, 4) and z.std().item() == pytest.approx(1.0, abs=1e-4)
    record = json.loads((tmp_path / "a" / latent.LATENT_FILE).read_text())
    manifest = json.loads((ckpt.newest_valid(vae_run / "checkpoints") / ckpt.MANIFEST)
                          .read_text())
    assert record["sha256"] == manifest["ema.safetensors"]
    space = latent.load_space(str(vae_run))
    x, _ = load_dataset("digits")
    assert torch.allclose(z, space.encode(x) * record["scale"], atol=1e-5)
    assert list((tmp_path / "cache").glob(f"latents-{record['sha256'][:16]}-*.pt"))
    assert seen[-1].shape == (8, 1, 8, 8) and seen[-1].abs().max() <= 1   # decoded pixels


def test_latent_run_resumes_bitwise(vae_run, tmp_path):
    flags = TINY_LATENT + ["--latent", str(vae_run)]
    assert loop.main(flags + ["--out", str(tmp_path / "whole")]) == 0
    assert loop.main(flags + ["--out", str(tmp_path / "split"), "--steps", "3"]) == 0
    assert loop.main(flags + ["--out", str(tmp_path / "split"), "--resume"]) == 0
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = (ckpt.read(ckpt.step_dir(tmp_path / r / "checkpoints", 6), name)
                for r in ("whole", "split"))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_pairings_say_what_to_use(vae_run, tmp_path, capsys):
    assert loop.main(["--model", "vae", "--data", "digits", "--out", str(tmp_path / "x")]) == 2
    assert "--model vae --objective vae" in capsys.readouterr().err
    assert loop.main(TINY_LATENT + ["--latent", str(tmp_path / "nothing"),
                                    "--out", str(tmp_path / "y")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    pixel = tmp_path / "pixel"
    assert loop.main(TINY_LATENT + ["--out", str(pixel)]) == 0
    assert loop.main(TINY_LATENT + ["--latent", str(pixel), "--out", str(tmp_path / "z")]) == 2
    assert "not an autoencoder" in capsys.readouterr().err


def torchrun_latent(vae_run, out, *flags, cache):
    return run_torchrun(2, "ringflow.train", *TINY_LATENT, "--latent", str(vae_run), "--out",
                        str(out), *flags, timeout=240, extra=("-m",),
                        env={"RINGFLOW_CACHE": str(cache)})[1]


def mpirun_latent(vae_run, out, *flags, cache):
    return run_mpirun(2, "-m", "ringflow.train", *TINY_LATENT, "--latent", str(vae_run),
                      "--out", str(out), *flags, timeout=240,
                      env={"RINGFLOW_CACHE": str(cache)})[1]


def assert_same_final_weights(a, b):
    for name in ("model.safetensors", "ema.safetensors"):
        x, y = (ckpt.read(ckpt.step_dir(r / "checkpoints", 6), name) for r in (a, b))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


@pytest.mark.launched
@pytest.mark.timeout(300)
def test_two_ranks_encode_shares_that_match_one_process(vae_run, tmp_path):
    out = tmp_path / "two"
    torchrun_latent(vae_run, out, cache=tmp_path / "cache")
    cached = list((tmp_path / "cache").glob("latents-*.pt"))
    assert len(cached) == 1
    x, _ = load_dataset("digits")
    one = latent.load_space(str(vae_run)).encode(x)               # the single-process oracle
    assert torch.allclose(torch.load(cached[0], weights_only=True), one, atol=1e-5)
    record = json.loads((out / latent.LATENT_FILE).read_text())
    assert record["scale"] == pytest.approx(1 / one.double().std().item(), rel=1e-5)
    assert config.from_dict(json.loads((out / "config.json").read_text())).latent == str(vae_run)


@pytest.mark.launched
@pytest.mark.mpi
@pytest.mark.timeout(600)
# ("zero2", torchrun_latent, mpirun_latent) passed too (2026-12-06); left out to keep the
# suite short, as ZeRO's resume is covered by test_train_reshard.py and fsdp shards more
@pytest.mark.parametrize("parallel, first, then", [("ddp", mpirun_latent, torchrun_latent),
                                                    ("fsdp", mpirun_latent, torchrun_latent)])
def test_latent_run_under_both_launchers_resumes_bitwise(vae_run, tmp_path, parallel, first,
                                                          then):
    # 6 steps in one launch against 3 under one launcher and 3 more under the other
    flags, cache = ("--parallel", parallel), tmp_path / "cache"
    then(vae_run, tmp_path / "whole", *flags, cache=cache)
    first(vae_run, tmp_path / "split", *flags, "--steps", "3", cache=cache)
    log = then(vae_run, tmp_path / "split", *flags, "--resume", cache=cache)
    assert "resumed from" in log and "step-00000003" in log
    assert_same_final_weights(tmp_path / "whole", tmp_path / "split")
    assert (tmp_path / "split" / latent.LATENT_FILE).is_file()
    assert (tmp_path / "split" / "samples" / "final.png").is_file()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("preset", ["mnist-latent-dit", "mnist-latent-mmdit"])
def test_latent_preset_briefly_trained_draws_the_digits_asked_for(vae_run, tmp_path, preset):
    # the preset's network on the digits' latents for 150 steps of 64 (the full preset on
    # MNIST is benchmarks/quality/latent.py); CFG samples must already be classified as asked
    # far above chance (10 %): measured 56.5 % (DiT) and 47.5 % (MMDiT) at CFG 2
    out = tmp_path / preset
    assert loop.main(["--preset", preset, "--data", "digits", "--latent", str(vae_run),
                      "--steps", "150", "--batch-size", "64", "--warmup-steps", "20",
                      "--threads", "1", "--progress", "false", "--num-samples", "10",
                      "--out", str(out)]) == 0
    assert evaluate.main([str(out), "--num-samples", "200", "--sample-steps", "20",
                          "--cfg-scale", "2", "--classifier-epochs", "10",
                          "--out", str(out / "eval.json")]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["accuracy"] >= 0.35, result
