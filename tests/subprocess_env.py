"""The environment of tests that run pxnode in a subprocess: every warning is an error.

Like pyproject's pytest ``filterwarnings``, with the same single exception: httpx's
own ByteStream generator warning when trio cancels a request mid-send at shutdown
(encode/httpx#3686), which is not a leak of ours.
"""

from __future__ import annotations

import os

WARNINGS = (
    "error,"
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected"
    ":ResourceWarning"
)


def strict_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": WARNINGS, **extra}
