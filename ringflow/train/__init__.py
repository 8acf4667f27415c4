"""``python -m ringflow.train``: training glue, the only layer beside ``bench`` that imports
everything (transport, collectives, parallel, models). One module per job:

    config     TrainConfig, its presets and the CLI generated from it
    checks     a TrainConfig against the world, launcher and data, before any process group
    build      the build_* steps: data, network, objective, autocast, --parallel; start()
    loop       the entry point (main): build_* calls and the training loop of a page
    resume     what a checkpoint holds and putting it back, bit for bit
    checkpoint atomic, verified checkpoint folders written by every rank
    log        rank 0's progress bar and metrics.jsonl; a null logger elsewhere
    ema        the EMA weights samples are drawn from
    generate   sharded image/point generation (each rank its share, one all-gather)
    plots      sample grids and the loss curve as PNG
    evaluate   ``python -m ringflow.evaluate RUN``: sample a run's checkpoint and score it

Importing this package loads none of them.
"""
