"""``python -m pxnode``: the same command line as the ``pxnode`` script."""

from pxnode.cli import main

main()
