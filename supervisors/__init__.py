"""The runtime of pxnode: mailboxes, refs, topics, supervisors, and the node.

Embedding::

    from supervisors import NodeConfig, open_node

    async with open_node(NodeConfig(contracts=["CON.F.US.MNQ.Z25"])) as node:
        df = await node.bars("CON.F.US.MNQ.Z25", "1min", 50)
"""

from .backoff import NO_BACKOFF as NO_BACKOFF
from .backoff import Backoff as Backoff
from .breaker import BreakerPolicy as BreakerPolicy
from .breaker import CircuitBreaker as CircuitBreaker
from .config import BarsConfig as BarsConfig
from .config import NodeConfig as NodeConfig
from .mailbox import Mailbox as Mailbox
from .mailbox import MailboxSpec as MailboxSpec
from .mailbox import MailboxStatistics as MailboxStatistics
from .mailbox import OverflowPolicy as OverflowPolicy
from .node import Node as Node
from .node import open_node as open_node
from .ref import MailboxRef as MailboxRef
from .registry import Registry as Registry
from .supervisor import ChildSpec as ChildSpec
from .supervisor import RestartType as RestartType
from .supervisor import Strategy as Strategy
from .supervisor import Supervisor as Supervisor
from .topic import Topic as Topic
