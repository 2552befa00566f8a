"""The ``pxnode`` command line (typer): ``app`` with every command, ``main`` to run it.

The commands live in two modules by what they run on (a tape, or a gateway or
a stream); importing them registers them on ``app``, in the order help lists them.
"""

from ._app import app as app
from ._app import main as main

# isort: off
from . import _tape as _tape  # replay, chart
from . import _live as _live  # gateway, demo, run, record, consume
# isort: on
