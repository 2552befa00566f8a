"""A simulated ProjectX Gateway on loopback: REST, both SignalR hubs, a seeded market, faults.

It stands in for the real gateway in ``pxnode demo``, in the tests, and for any
third-party client (pysignalr, signalrcore and the ProjectX SDKs built on them).

* REST (``rest``): every endpoint of the real API the node uses, POST under /api
  with JSON bodies and ``{success, errorCode, errorMessage}`` answers, plus
  ``GET /api/Status/ping``. Sans-IO, so tests can drive it through
  ``mock_transport`` without a socket. It has the gateway's habits, so tests
  catch what the real one would do: failures carry the endpoint's error code,
  ``errorMessage: null`` and null arrays; more than 30 History/retrieveBars per
  30 s or 200 other calls per 60 s get HTTP 429 (no Retry-After); History bars
  are aligned the gateway's way (days at 00:00 UTC, not at the session open).
* Hubs (``hubs``, ``hubconn``, ``server``): /hubs/market and /hubs/user, with or
  without a prior ``POST {hub}/negotiate?negotiateVersion=0|1``; the token goes in
  the ``access_token`` query parameter or an ``Authorization: Bearer`` header.
  ``hubs`` is the sans-IO SignalR session, ``hubconn`` one session's websocket,
  ``server`` the HTTP listener and the tasks that feed every connection.
* Market (``market``, ``book``, ``contracts``): a pure, seeded generator,
  ``MarketSim(seed, contracts, rate).advance(t)``; History/retrieveBars aggregates
  exactly what it emitted. ``book`` keeps each contract's depth ladder and records,
  ``contracts`` the catalogue (``CONTRACTS``, ``find_contract``, ``point_value``).
  Depth items use every DomType (a snapshot starts with a Reset, 6).
* Account (``account``): the demo trader (``DEMO_ACCOUNT_ID``) behind REST and the
  user hub; it trades (seeded market orders filled at the sim's price), so orders,
  fills, its position and its balance change as on a live account. A user-hub subscription
  is answered with the current state it covers unless ``SimConfig.user_snapshot`` is False,
  which behaves like the real gateway (nothing until something changes; a client asks the
  REST searches), as ``pxnode demo`` does.
* Entry points (``entry``): ``serve(config, task_status=...)`` reports the bound
  port; ``running(config)`` yields the live ``GatewaySim``.

Fault SPEC
----------
``SimConfig.faults`` (``pxnode gateway --faults``) is a comma-separated list::

    SPEC  := ITEM ("," ITEM)*          (the empty string: no faults)
    ITEM  := KIND "@" WHEN [":" ARG]
    WHEN  := SECONDS                   once, SECONDS after the gateway started
           | "every=" SECONDS          repeatedly, first after SECONDS
           | "p=" PROBABILITY          at each whole second with this probability (seeded)

Times are seconds (decimals allowed) since the gateway started serving. Random
faults draw from the gateway's seed, so one seed and one SPEC replay the same
faults at the same offsets.

============  ==========================  =============================================
KIND          ARG (default)               effect
============  ==========================  =============================================
drop          -                           abort every hub socket (no close handshake)
stall         seconds (5)                 hubs go silent: no data, no pings, sockets open;
                                          market events of the stall are never sent
malformed     count (1)                   each market connection gets COUNT bad frames,
                                          cycling: truncated JSON, wrong arity, wrong
                                          types, infinite price / zero volume, NaN-ish
                                          quote, unknown target, non-array arguments,
                                          unknown message type
oversize      bytes (2 MiB)               each market connection gets one well-formed
                                          GatewayDepth frame of at least BYTES
expire        -                           every token expires: REST and hub auth get 401;
                                          open hubs get Close(error, allowReconnect=true)
revoke        -                           every token is revoked: as expire, but
                                          allowReconnect=false
logout        -                           the session is logged out: every token is
                                          revoked and both hubs get GatewayLogout, their
                                          sockets stay open (silent until the client
                                          logs in again and reconnects)
rest429       count (1)                   the next COUNT /api calls get 429, Retry-After: 1
rest500       count (1)                   the next COUNT /api calls get 500
slow          seconds (5)                 the server writes slowly: a 0.1 s pause after
                                          each websocket write (frames coalesce)
burst         trades (1000)               TRADES trades at one instant, sent as
                                          GatewayTrade lists of up to 500
============  ==========================  =============================================

Example: ``drop@10,stall@20:5,malformed@30:3,oversize@40,expire@50,revoke@60,
rest429@70:2,rest500@80,slow@90:5,burst@100:5000,drop@every=300,malformed@p=0.01:2``.
"""

from pxnode.sim.account import DEMO_ACCOUNT_ID, DEMO_API_KEY, DEMO_USERNAME
from pxnode.sim.config import SimConfig
from pxnode.sim.contracts import (
    CONTRACTS,
    DEFAULT_CONTRACTS,
    ContractSpec,
    contract_symbol,
    find_contract,
    point_value,
)
from pxnode.sim.entry import gateway_config, running, serve, system_clock
from pxnode.sim.faults import Fault, FaultRule, FaultSchedule, parse_faults
from pxnode.sim.market import MarketSim
from pxnode.sim.rest import RestHandler, mock_transport
from pxnode.sim.server import GatewaySim

__all__ = [
    "CONTRACTS",
    "DEFAULT_CONTRACTS",
    "DEMO_ACCOUNT_ID",
    "DEMO_API_KEY",
    "DEMO_USERNAME",
    "ContractSpec",
    "Fault",
    "FaultRule",
    "FaultSchedule",
    "GatewaySim",
    "MarketSim",
    "RestHandler",
    "SimConfig",
    "contract_symbol",
    "find_contract",
    "gateway_config",
    "mock_transport",
    "parse_faults",
    "point_value",
    "running",
    "serve",
    "system_clock",
]
