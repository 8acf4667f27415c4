"""``python -m ringflow.bench``: see ringflow.bench."""
from . import main

main()
