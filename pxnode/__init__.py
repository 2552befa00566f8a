"""pxnode: a realtime market-data node for the ProjectX Gateway, built as supervised actors.

This package is the way in for applications::

    from pxnode import NodeConfig, GatewayConfig, open_node

    config = NodeConfig(contracts=["CON.F.US.MNQ.Z25"], gateway=GatewayConfig())
    async with open_node(config) as node:
        await node.ready()
        df = await node.bars("CON.F.US.MNQ.Z25", "1min", 50)

Below it lie three floors it is built from: ``protocols`` (messages, wire
schemas, codec, errors), ``actors`` (one per job of the node) and
``supervisors`` (the runtime and the node table). ``pxnode.testing`` helps test
applications; ``pxnode.sim`` is the simulated gateway; ``python -m pxnode`` is
the command line.
"""

from actors.nats_bridge import NatsConfig as NatsConfig
from protocols.errors import AskTimeout as AskTimeout
from protocols.errors import AuthFailed as AuthFailed
from protocols.errors import ConfigError as ConfigError
from protocols.errors import Escalation as Escalation
from protocols.errors import GatewayError as GatewayError
from protocols.errors import NotReady as NotReady
from protocols.errors import PxError as PxError
from protocols.errors import UnknownSeries as UnknownSeries
from protocols.health import HealthReport as HealthReport
from protocols.messages import Bar as Bar
from protocols.messages import BarClosed as BarClosed
from protocols.messages import BarSource as BarSource
from protocols.messages import BarUpdated as BarUpdated
from protocols.messages import DepthsAccepted as DepthsAccepted
from protocols.messages import QuoteAccepted as QuoteAccepted
from protocols.messages import QuotesAccepted as QuotesAccepted
from protocols.messages import TapePlayed as TapePlayed
from protocols.messages import Trade as Trade
from protocols.messages import TradesAccepted as TradesAccepted
from protocols.secrets import Secret as Secret
from protocols.stats import StatsSnapshot as StatsSnapshot
from supervisors.children import Network as Network
from supervisors.config import BarsConfig as BarsConfig
from supervisors.config import GatewayConfig as GatewayConfig
from supervisors.config import NodeConfig as NodeConfig
from supervisors.config import TapeConfig as TapeConfig
from supervisors.config import load_config as load_config
from supervisors.mailbox import OverflowPolicy as OverflowPolicy
from supervisors.node import Node as Node
from supervisors.node import open_node as open_node

__version__ = "0.2.0"

__all__ = [
    "AskTimeout",
    "AuthFailed",
    "Bar",
    "BarClosed",
    "BarSource",
    "BarUpdated",
    "BarsConfig",
    "ConfigError",
    "DepthsAccepted",
    "Escalation",
    "GatewayConfig",
    "GatewayError",
    "HealthReport",
    "NatsConfig",
    "Network",
    "Node",
    "NodeConfig",
    "NotReady",
    "OverflowPolicy",
    "PxError",
    "QuoteAccepted",
    "QuotesAccepted",
    "Secret",
    "StatsSnapshot",
    "TapeConfig",
    "TapePlayed",
    "Trade",
    "TradesAccepted",
    "UnknownSeries",
    "__version__",
    "load_config",
    "open_node",
]
