"""The sim's contract catalogue: ids, names and tick sizes as the gateway spells them.

Apart from the market so that what names a contract (the CLI, the config, the
account's point values) does not depend on how its prices are made.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import msgspec


class ContractSpec(msgspec.Struct, frozen=True):
    """A simulated futures contract; ``weight`` is its share of the trade rate."""

    id: str
    name: str
    description: str
    symbol_id: str
    tick_size: float
    tick_value: float
    start_price: float
    weight: float = 1.0

    @property
    def decimals(self) -> int:
        text = repr(self.tick_size)
        return len(text.partition(".")[2].rstrip("0"))


DEFAULT_CONTRACTS: Final = (
    ContractSpec(
        "CON.F.US.MNQ.Z25", "MNQZ5", "Micro E-mini Nasdaq-100: December 2025",
        "F.US.MNQ", 0.25, 0.5, 21000.0, weight=4.0,
    ),
    ContractSpec(
        "CON.F.US.ENQ.Z25", "NQZ5", "E-mini NASDAQ-100: December 2025",
        "F.US.ENQ", 0.25, 5.0, 21000.0, weight=2.0,
    ),
    ContractSpec(
        "CON.F.US.EP.Z25", "ESZ5", "E-Mini S&P 500: December 2025",
        "F.US.EP", 0.25, 12.5, 6000.0, weight=3.0,
    ),
    ContractSpec(
        "CON.F.US.GCE.G26", "GCG6", "Gold (Globex): February 2026",
        "F.US.GCE", 0.1, 10.0, 4000.0, weight=1.0,
    ),
)  # fmt: skip
MORE_CONTRACTS: Final = tuple(
    ContractSpec(f"CON.F.US.{root}.Z25", f"{root}Z5", f"{root}: December 2025",
                 f"F.US.{root}", tick, value, price)
    for root, tick, value, price in (
        ("MES", 0.25, 1.25, 6000.0), ("M2K", 0.1, 0.5, 2400.0), ("RTY", 0.1, 5.0, 2400.0),
        ("YM", 1.0, 5.0, 47000.0), ("MYM", 1.0, 0.5, 47000.0), ("CLE", 0.01, 10.0, 60.0),
        ("MCLE", 0.01, 1.0, 60.0), ("NGE", 0.001, 10.0, 4.5), ("SIE", 0.005, 25.0, 50.0),
        ("CPE", 0.0005, 12.5, 5.0), ("ZB", 0.03125, 31.25, 117.0), ("ZN", 0.015625, 15.625, 112.0),
        ("6B", 0.0001, 6.25, 1.27), ("6A", 0.0001, 10.0, 0.65), ("MGC", 0.1, 1.0, 4000.0),
        ("HE", 0.025, 10.0, 80.0),
    )
)  # fmt: skip
"""Known to the sim (``SimConfig.contracts`` may name them) but not served by default."""
CONTRACTS: Final = {spec.id: spec for spec in (*DEFAULT_CONTRACTS, *MORE_CONTRACTS)}


def find_contract(name: str) -> str | None:
    """The id of the sim's contract called ``name``: its id, its symbol (MNQ, ES) or its
    name with or without the expiry (MNQZ5, MNQ); None if the sim has no such contract."""
    if name in CONTRACTS:
        return name
    wanted = name.upper()
    for contract_id, spec in CONTRACTS.items():
        symbol = spec.symbol_id.rsplit(".", 1)[-1].upper()
        if wanted in (spec.name.upper(), symbol) or spec.name.upper()[:-2] == wanted:
            return contract_id
    return None


def contract_symbol(contract_id: str) -> str:
    """What a trader calls ``contract_id``: ESZ5 for ``CON.F.US.EP.Z25``.

    The exchange root in an id is the gateway's own (EP, ENQ), not the one traders
    say (ES, NQ); the sim's catalogue holds the gateway's names for the common
    contracts. Any other id gives its root, an id of another shape itself.
    """
    spec = CONTRACTS.get(contract_id)
    if spec is not None:
        return spec.name
    parts = contract_id.split(".")
    return parts[3] if len(parts) == 5 and parts[3] else contract_id


def point_value(contract_id: str) -> float | None:
    """Money per 1.0 of price of ``contract_id`` (tick value / tick size) where the
    catalogue knows it (the gateway's values for these contracts); None elsewhere."""
    spec = CONTRACTS.get(contract_id)
    return None if spec is None else spec.tick_value / spec.tick_size


def contracts_for(ids: Iterable[str]) -> list[ContractSpec]:
    """The specs of ``ids`` (unknown ids raise ``KeyError`` naming them)."""
    specs = []
    for contract in ids:
        if contract not in CONTRACTS:
            raise KeyError(f"unknown contract {contract!r}; known: {', '.join(CONTRACTS)}")
        specs.append(CONTRACTS[contract])
    return specs
