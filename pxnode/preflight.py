"""Checks before a live node starts, so a mistake is one clear line, not a retry loop.

* The gateway must be reachable (GET /api/Status/ping, no auth): an unreachable
  URL is a typo far more often than an outage.

Contract symbols are looked up by ``open_node`` itself (``supervisors.contracts``),
for the CLI and embedding applications alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.errors import GatewayError
from protocols.secrets import redact_userinfo

if TYPE_CHECKING:
    import httpx


async def check_reachable(
    api_url: str, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 10.0
) -> None:
    """``GatewayError`` if nothing answers at ``api_url`` (any HTTP answer will do)."""
    import httpx

    async with httpx.AsyncClient(base_url=api_url, transport=transport, timeout=timeout) as client:
        try:
            await client.get("/api/Status/ping")
        except httpx.HTTPError as error:
            where = f"{redact_userinfo(api_url)}: {type(error).__name__}"
            raise GatewayError(f"gateway unreachable at {where}") from None
