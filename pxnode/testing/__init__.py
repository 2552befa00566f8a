"""Test helpers for applications built on pxnode (and for pxnode's own suite).

Like ``trio.testing`` or httpx's ``MockTransport``, this is a supported module:

* an in-memory socket pair (``socket_pair``) that behaves like TCP, even under
  trio's ``MockClock``;
* ``sim_node``: the real node wired to the simulated gateway through an
  in-memory ``Network``, so hours of reconnects run in milliseconds on
  ``MockClock(autojump_threshold=0)``; ``Tap`` reads a topic afterwards,
  ``until`` polls a condition in virtual time;
* ``NatsServer``: a real nats-server with JetStream on a free loopback port;
* doubles for testing one actor alone: ``RecordingRef``, ``FakeContext``,
  ``FakeAuth``, ``ScriptedInbox``, ``MemoryInbox``.
"""

from ._fakes import EPOCH as EPOCH
from ._fakes import FakeAuth as FakeAuth
from ._fakes import FakeContext as FakeContext
from ._fakes import MemoryInbox as MemoryInbox
from ._fakes import RecordingRef as RecordingRef
from ._fakes import ScriptedInbox as ScriptedInbox
from ._memory import Pipe as Pipe
from ._memory import socket_pair as socket_pair
from ._nats import NatsServer as NatsServer
from ._simnode import ACCOUNT as ACCOUNT
from ._simnode import API_KEY as API_KEY
from ._simnode import ES as ES
from ._simnode import HOSTS as HOSTS
from ._simnode import MNQ as MNQ
from ._simnode import SimNet as SimNet
from ._simnode import SimNode as SimNode
from ._simnode import Tap as Tap
from ._simnode import node_config as node_config
from ._simnode import node_tasks as node_tasks
from ._simnode import sim_node as sim_node
from ._simnode import until as until

__all__ = [
    "ACCOUNT",
    "API_KEY",
    "EPOCH",
    "ES",
    "HOSTS",
    "MNQ",
    "FakeAuth",
    "FakeContext",
    "MemoryInbox",
    "NatsServer",
    "Pipe",
    "RecordingRef",
    "ScriptedInbox",
    "SimNet",
    "SimNode",
    "Tap",
    "node_config",
    "node_tasks",
    "sim_node",
    "socket_pair",
    "until",
]
