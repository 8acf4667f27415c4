"""``python -m ringflow.evaluate RUN``: the public entry point only; the code (and its usage)
lives in ``ringflow.train.evaluate``."""
import sys

from .train.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
