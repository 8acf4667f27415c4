"""Latent generation on MNIST from the CLI (issue 17; not CI). Results: results/models.md.

    python benchmarks/quality/latent.py vae            # 4 vs 16 latent channels: PSNR, recon FD
    python benchmarks/quality/latent.py pixel-latent   # pixel vs latent DiT at equal compute
    python benchmarks/quality/latent.py channels       # latent DiT on 4 vs 16 channels: sample FD
    python benchmarks/quality/latent.py mmdit          # DiT vs MMDiT (text stream) on 4ch latents

Every model is trained by ``torchrun --nproc_per_node=2 -m ringflow.train`` and scored by
``python -m ringflow.evaluate RUN`` (1000 CFG samples, 100 per class; Frechet distance in the
features of the local MNIST classifier; share classified as the class asked for). Runs land in
``--runs`` (default runs/latent-bench) and are reused when finished, so the tasks share the
autoencoders. Each prints one JSON line per model with the exact commands. Each training
launch holds ``--lock`` (flock) so timed runs of engineers sharing the machine never overlap.

Equal compute: the pixel DiT sees 28x28x1 in 4x4 patches (49 tokens), the latent DiT 7x7xC in
1x1 patches (49 tokens); same width, depth, batch and steps, so the same transformer FLOPs per
step. The latent run also pays the autoencoder once (its training and one encoding pass),
reported beside it.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TRAIN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m",
         "ringflow.train", "--progress", "false", "--threads", "1"]
EVALUATE = [sys.executable, "-m", "ringflow.evaluate"]
WIDTH = {"hidden_size": 64, "depth": 4, "num_heads": 4}


def vae_flags(channels):
    return ["--preset", "mnist-vae", "--model-kwargs",
            json.dumps({"latent_channels": channels, "factor": 4})]


def generator_flags(args, model="dit", patch=1, latent=None, **extra):
    flags = ["--data", "mnist", "--model", model, "--model-kwargs",
             json.dumps({"patch_size": patch, **WIDTH, **extra}), "--steps", str(args.steps),
             "--batch-size", "128", "--lr", "1e-3", "--lr-schedule", "cosine",
             "--sample-every", "0", "--cfg-scale", str(args.cfg_scale)]
    return flags + (["--latent", str(latent)] if latent else [])


def trained(args, name, flags):
    """Train (unless RUN/done exists) -> (run folder, seconds, command)."""
    out = Path(args.runs) / name
    cmd = TRAIN + flags + ["--out", str(out)]
    if not (out / "done").is_file():
        start = time.time()
        subprocess.run((["flock", args.lock] if args.lock else []) + cmd, check=True)
        (out / "done").write_text(f"{time.time() - start:.0f}\n")
    return out, float((out / "done").read_text()), " ".join(cmd[1:])


def scored(run, args):
    """Evaluate (unless RUN/eval.json already scored as many samples) -> (result, command)."""
    cmd = EVALUATE + [str(run), "--num-samples", str(args.samples), "--out", str(run / "eval.json")]
    done = run / "eval.json"
    if not done.is_file() or json.loads(done.read_text())["num_samples"] != args.samples:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(done.read_text()), " ".join(cmd[1:])


def report(name, run, seconds, train_cmd, args, keys):
    result, eval_cmd = scored(run, args)
    line = {"model": name, "train_seconds": seconds, "train": train_cmd, "evaluate": eval_cmd}
    line.update({k: round(result[k], 4) for k in keys if k in result})
    print(json.dumps(line), flush=True)
    return result


def vae(args, channels):
    return trained(args, f"vae{channels}", vae_flags(channels))


def run_vae(args):
    for channels in (4, 16):
        run, secs, cmd = vae(args, channels)
        report(f"vae-{channels}ch-f4", run, secs, cmd, args, ["recon_psnr", "recon_fd"])


def run_pixel_latent(args):
    pixel = trained(args, "pixel-dit", generator_flags(args, patch=4))
    report("pixel-dit-p4", *pixel, args, ["fd", "kid", "accuracy"])
    ae = vae(args, 4)
    latent = trained(args, "latent-dit4", generator_flags(args, latent=ae[0]))
    report(f"latent-dit-4ch (+ vae {ae[1]:.0f} s)", *latent, args, ["fd", "kid", "accuracy"])


def run_channels(args):
    for channels in (4, 16):
        ae = vae(args, channels)
        latent = trained(args, f"latent-dit{channels}", generator_flags(args, latent=ae[0]))
        report(f"latent-dit-{channels}ch", *latent, args, ["fd", "kid", "accuracy"])


def run_mmdit(args):
    ae = vae(args, 4)
    for model, extra in (("dit", {}), ("mmdit", {"text": True})):
        name = f"latent-{model}4"
        run = trained(args, name, generator_flags(args, model=model, latent=ae[0], **extra))
        report(name + (" (text tokens)" if extra else ""), *run, args,
               ["fd", "kid", "accuracy"])


TASKS = {"vae": run_vae, "pixel-latent": run_pixel_latent, "channels": run_channels,
         "mmdit": run_mmdit}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--steps", type=int, default=800, help="generator training steps")
    parser.add_argument("--cfg-scale", type=float, default=2.0, help="guidance for samples")
    parser.add_argument("--samples", type=int, default=1000, help="samples scored per model")
    parser.add_argument("--runs", default="runs/latent-bench", help="run folders (reused)")
    parser.add_argument("--lock", default="/tmp/ringflow-bench.lock",
                        help="flock file held by each training launch ('': none)")
    args = parser.parse_args()
    TASKS[args.task](args)


if __name__ == "__main__":
    main()
