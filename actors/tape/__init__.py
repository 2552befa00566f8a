"""Tapes: the recorder writes every received hub message to one, the player plays one back.

``recorder`` holds the tape format (``TapeLine``), the reader (``read_tape``)
and ``TapeRecorder``, the actor that appends a live node's hub traffic to a
tape; ``player`` holds ``TapePlayer``, the actor that plays a tape into a node
as its only source, in tape time (``NodeConfig.tape``, ``pxnode replay``).
"""

from .player import TapePlayer as TapePlayer
from .recorder import TapeCounts as TapeCounts
from .recorder import TapeLine as TapeLine
from .recorder import TapeRecorder as TapeRecorder
from .recorder import decode_chunk as decode_chunk
from .recorder import encode_line as encode_line
from .recorder import open_tape as open_tape
from .recorder import read_tape as read_tape

__all__ = [
    "TapeCounts",
    "TapeLine",
    "TapePlayer",
    "TapeRecorder",
    "decode_chunk",
    "encode_line",
    "open_tape",
    "read_tape",
]
