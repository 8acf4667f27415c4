"""``python -m ringflow.train``: see ringflow.train.loop."""
import sys

from .loop import main

sys.exit(main())
