"""``python -m stages ...`` is the same as the ``invert`` console script."""

from stages.cli import main

main()
