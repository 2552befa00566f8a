"""Gateway wire schemas: camelCase both ways, tolerant reads, strict types."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest

from protocols.gateway import (
    DEPTH_ARGS,
    ENCODER,
    QUOTE_ARGS,
    TRADE_ARGS,
    TRADE_TICKS,
    Account,
    AccountSearchRequest,
    AccountSearchResponse,
    BarUnit,
    Contract,
    ContractAvailableRequest,
    ContractSearchByIdRequest,
    ContractSearchByIdResponse,
    ContractSearchRequest,
    ContractSearchResponse,
    HistoryBar,
    LoginKeyRequest,
    LoginResponse,
    LogoutResponse,
    OpenOrderSearchRequest,
    Order,
    OrderSearchRequest,
    OrderSearchResponse,
    Position,
    PositionSearchRequest,
    PositionSearchResponse,
    QuoteItem,
    RestResponse,
    RetrieveBarsRequest,
    RetrieveBarsResponse,
    TradeItem,
    TradeRecord,
    TradeSearchRequest,
    TradeSearchResponse,
    TradeTick,
    UserAccount,
    UserOrder,
    UserPosition,
    UserTrade,
    ValidateResponse,
    Wrapped,
    decode_user_event,
    decoder,
    describe_error,
)

TS = "2025-01-02T15:04:05.123456+00:00"

CONTRACT = Contract(
    id="CON.F.US.MNQ.Z25",
    name="MNQZ5",
    description="Micro E-mini Nasdaq-100",
    tick_size=0.25,
    tick_value=0.5,
    active_contract=True,
    symbol_id="F.US.MNQ",
)
ACCOUNT = Account(
    id=7, name="DEMO", balance=50_000.0, can_trade=True, is_visible=True, simulated=True
)
ORDER = Order(
    id=1,
    account_id=7,
    contract_id="CON.F.US.MNQ.Z25",
    creation_timestamp=TS,
    status=1,
    type=1,
    side=0,
    size=2,
    limit_price=21_000.25,
)
POSITION = Position(
    id=3,
    account_id=7,
    contract_id="CON.F.US.MNQ.Z25",
    creation_timestamp=TS,
    type=1,
    size=2,
    average_price=21_000.5,
)
TRADE_RECORD = TradeRecord(
    id=9,
    account_id=7,
    contract_id="CON.F.US.MNQ.Z25",
    creation_timestamp=TS,
    price=21_000.5,
    profit_and_loss=None,
    fees=0.37,
    side=0,
    size=2,
    voided=False,
    order_id=1,
)


def roundtrip(value: msgspec.Struct) -> msgspec.Struct:
    return decoder(type(value)).decode(ENCODER.encode(value))


# ----------------------------------------------------------------- camelCase


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (LoginKeyRequest(user_name="u", api_key="k"), {"userName": "u", "apiKey": "k"}),
        (AccountSearchRequest(), {"onlyActiveAccounts": True}),
        (ContractSearchRequest(search_text="MNQ"), {"searchText": "MNQ", "live": False}),
        (ContractSearchByIdRequest(contract_id="C"), {"contractId": "C"}),
        (ContractAvailableRequest(), {"live": False}),
        (
            RetrieveBarsRequest(
                contract_id="C",
                live=False,
                start_time=TS,
                end_time=TS,
                unit=BarUnit.MINUTE,
                unit_number=5,
                limit=100,
                include_partial_bar=True,
            ),
            {
                "contractId": "C",
                "live": False,
                "startTime": TS,
                "endTime": TS,
                "unit": 2,
                "unitNumber": 5,
                "limit": 100,
                "includePartialBar": True,
            },
        ),
        (
            OrderSearchRequest(account_id=7, start_timestamp=TS),
            {"accountId": 7, "startTimestamp": TS, "endTimestamp": None},
        ),
        (OpenOrderSearchRequest(account_id=7), {"accountId": 7}),
        (PositionSearchRequest(account_id=7), {"accountId": 7}),
        (
            TradeSearchRequest(account_id=7, start_timestamp=TS),
            {"accountId": 7, "startTimestamp": TS, "endTimestamp": None},
        ),
    ],
)
def test_requests_are_camel_case_and_complete(value: msgspec.Struct, wire: object) -> None:
    assert msgspec.json.decode(ENCODER.encode(value)) == wire
    assert roundtrip(value) == value


def test_responses_always_carry_the_status_fields() -> None:
    assert msgspec.json.decode(ENCODER.encode(LoginResponse(token="t"))) == {
        "token": "t",
        "success": True,
        "errorCode": 0,
        "errorMessage": None,
    }
    assert msgspec.json.decode(ENCODER.encode(LogoutResponse())) == {
        "success": True,
        "errorCode": 0,
        "errorMessage": None,
    }
    failed = ValidateResponse(success=False, error_code=3, error_message="nope")
    assert msgspec.json.decode(ENCODER.encode(failed)) == {
        "newToken": None,
        "success": False,
        "errorCode": 3,
        "errorMessage": "nope",
    }


@pytest.mark.parametrize(
    "value",
    [
        LoginResponse(token="a.b.c"),
        ValidateResponse(new_token="a.b.c"),
        AccountSearchResponse(accounts=[ACCOUNT]),
        ContractSearchResponse(contracts=[CONTRACT]),
        ContractSearchByIdResponse(contract=CONTRACT),
        RetrieveBarsResponse(bars=[HistoryBar(t=TS, o=1.0, h=2.0, l=0.5, c=1.5, v=10)]),
        OrderSearchResponse(orders=[ORDER]),
        PositionSearchResponse(positions=[POSITION]),
        TradeSearchResponse(trades=[TRADE_RECORD]),
    ],
)
def test_responses_roundtrip(value: msgspec.Struct) -> None:
    assert roundtrip(value) == value


def test_gateway_shaped_json_decodes_to_snake_case() -> None:
    body = (
        b'{"contracts":[{"id":"CON.F.US.MNQ.Z25","name":"MNQZ5",'
        b'"description":"Micro E-mini Nasdaq-100","tickSize":0.25,"tickValue":0.5,'
        b'"activeContract":true,"symbolId":"F.US.MNQ"}],'
        b'"success":true,"errorCode":0,"errorMessage":null}'
    )
    assert decoder(ContractSearchResponse).decode(body).contracts == [CONTRACT]
    accounts = (
        b'{"accounts":[{"id":7,"name":"DEMO","balance":50000,"canTrade":true,'
        b'"isVisible":true,"simulated":true}],"success":true,"errorCode":0,"errorMessage":null}'
    )
    assert decoder(AccountSearchResponse).decode(accounts).accounts == [ACCOUNT]


def test_a_failure_answer_with_no_payload_decodes() -> None:
    answer = decoder(LoginResponse).decode(b'{"success":false,"errorCode":3}')
    assert (answer.success, answer.error_code, answer.token) == (False, 3, None)
    assert decoder(AccountSearchResponse).decode(b'{"success":false}').accounts is None


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        (RetrieveBarsResponse, "bars"),
        (AccountSearchResponse, "accounts"),
        (ContractSearchResponse, "contracts"),
        (OrderSearchResponse, "orders"),
        (PositionSearchResponse, "positions"),
        (TradeSearchResponse, "trades"),
    ],
)
def test_the_gateways_failure_answers_with_null_arrays_decode(kind: Any, field: str) -> None:
    body = b'{"%s":null,"success":false,"errorCode":1,"errorMessage":null}' % field.encode()
    answer = decoder(kind).decode(body)
    assert (answer.success, answer.error_code, getattr(answer, field)) == (False, 1, None)


def test_an_error_code_is_one_line_with_its_name() -> None:
    answer = RetrieveBarsResponse(success=False, error_code=1, error_message=None, bars=None)
    line = describe_error("/api/History/retrieveBars", answer)
    assert line == "History/retrieveBars refused: errorCode 1 (ContractNotFound)"
    login = LoginResponse(success=False, error_code=3, error_message="bad key SECRET")
    assert describe_error("/api/Auth/loginKey", login, lambda t: t.replace("SECRET", "***")) == (
        "Auth/loginKey refused: errorCode 3 (InvalidCredentials): bad key ***"
    )
    assert describe_error("/api/Foo/bar", RestResponse(success=False, error_code=9)) == (
        "Foo/bar refused: errorCode 9"
    )


def test_bar_units() -> None:
    assert [int(u) for u in BarUnit] == [1, 2, 3, 4, 5, 6]
    assert BarUnit(4) is BarUnit.DAY


def test_decoder_is_built_once_per_type() -> None:
    assert decoder(LoginResponse) is decoder(LoginResponse)
    assert decoder(ValidateResponse).type is ValidateResponse


# ------------------------------------------------------------- tolerant reads


def test_unknown_fields_are_ignored() -> None:
    answer = decoder(LoginResponse).decode(
        b'{"token":"t","success":true,"errorCode":0,"errorMessage":null,"brandNew":{"x":[1]}}'
    )
    assert answer.token == "t"
    _, trades = TRADE_ARGS.decode(
        b'["C",[{"symbolId":"F.US.MNQ","price":1.5,"timestamp":"%s","type":0,"volume":1,'
        b'"extra":true}]]' % TS.encode()
    )
    assert isinstance(trades, list)
    assert trades[0].price == 1.5


def test_partial_quotes_decode() -> None:
    contract, quote = QUOTE_ARGS.decode(b'["C",{"lastPrice":21000.25}]')
    assert contract == "C"
    assert quote == QuoteItem(last_price=21000.25)
    assert QUOTE_ARGS.decode(b'["C",{}]')[1] == QuoteItem()


def test_trade_payload_is_a_list_or_one_object() -> None:
    item = b'{"symbolId":"F.US.MNQ","price":1.5,"timestamp":"%s","type":1,"volume":3}' % (
        TS.encode()
    )
    expected = TradeItem(symbol_id="F.US.MNQ", price=1.5, timestamp=TS, type=1, volume=3)
    assert TRADE_ARGS.decode(b'["C",[' + item + b"," + item + b"]]") == (
        "C",
        [expected, expected],
    )
    assert TRADE_ARGS.decode(b'["C",' + item + b"]") == ("C", expected)


def test_validation_reads_trade_items_without_their_symbol() -> None:
    item = b'{"symbolId":"F.US.MNQ","price":1.5,"timestamp":"%s","type":1,"volume":3}' % (
        TS.encode()
    )
    tick = TradeTick(price=1.5, timestamp=TS, type=1, volume=3)
    assert TRADE_TICKS.decode(b'["C",[' + item + b"," + item + b"]]") == ("C", [tick, tick])
    no_symbol = b'{"price":1.5,"timestamp":"%s","type":1,"volume":3}' % TS.encode()
    assert TRADE_TICKS.decode(b'["C",' + no_symbol + b"]") == ("C", tick)


def test_depth_payload_is_a_list_or_one_object() -> None:
    item = b'{"timestamp":"%s","type":1,"price":2.5,"volume":4,"currentVolume":9}' % TS.encode()
    contract, levels = DEPTH_ARGS.decode(b'["C",[' + item + b"]]")
    assert contract == "C"
    assert isinstance(levels, list)
    assert levels[0].current_volume == 9
    assert DEPTH_ARGS.decode(b'["C",' + item + b"]")[1].volume == 4  # type: ignore[union-attr]


def test_history_bars_keep_the_newest_first_order() -> None:
    body = (
        b'{"bars":[{"t":"2025-01-02T15:05:00+00:00","o":2,"h":3,"l":1,"c":2.5,"v":7},'
        b'{"t":"2025-01-02T15:04:00+00:00","o":1,"h":2,"l":1,"c":2,"v":5}],"success":true}'
    )
    bars = decoder(RetrieveBarsResponse).decode(body).bars
    assert bars is not None
    assert [b.t for b in bars] == ["2025-01-02T15:05:00+00:00", "2025-01-02T15:04:00+00:00"]
    assert bars[0].o == 2.0


# ------------------------------------------------------------------ user hub


USER_PAYLOADS = [
    (UserAccount, UserAccount(**msgspec.structs.asdict(ACCOUNT))),
    (UserOrder, UserOrder(**msgspec.structs.asdict(ORDER))),
    (UserPosition, UserPosition(**msgspec.structs.asdict(POSITION))),
    (UserTrade, UserTrade(**msgspec.structs.asdict(TRADE_RECORD))),
]


@pytest.mark.parametrize(("kind", "payload"), USER_PAYLOADS)
def test_user_events_decode_wrapped(kind: type[msgspec.Struct], payload: msgspec.Struct) -> None:
    wire = ENCODER.encode(Wrapped(payload, action=1))
    assert b'"action":1' in wire
    assert decode_user_event(kind, wire) == Wrapped(payload, action=1)


@pytest.mark.parametrize(("kind", "payload"), USER_PAYLOADS)
def test_user_events_decode_bare(kind: type[msgspec.Struct], payload: msgspec.Struct) -> None:
    event = decode_user_event(kind, msgspec.Raw(ENCODER.encode(payload)))
    assert event == Wrapped(payload)
    assert event.action is None


def test_user_event_fields_are_camel_case_on_the_wire() -> None:
    wire = msgspec.json.decode(ENCODER.encode(UserOrder(**msgspec.structs.asdict(ORDER))))
    assert {"accountId", "contractId", "creationTimestamp", "limitPrice"} <= set(wire)


def test_wrapped_without_action_and_gateway_nulls() -> None:
    body = (
        b'{"data":{"id":1,"accountId":7,"contractId":"C","creationTimestamp":"%s",'
        b'"status":2,"type":1,"side":1,"size":1,"limitPrice":null,"stopPrice":null,'
        b'"fillVolume":1,"filledPrice":20999.75,"customTag":null,"symbolId":"F.US.MNQ"}}'
    ) % TS.encode()
    event = decode_user_event(UserOrder, body)
    assert event.action is None
    assert event.data.filled_price == 20999.75
    assert event.data.limit_price is None


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'"order"',
        b'{"action":1,"data":[1,2]}',
        b'{"action":"one","data":{}}',
        b'{"action":1,"data":{"id":"x"}}',
        b"{}",
    ],
)
def test_bad_user_events_raise_validation_error(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_user_event(UserOrder, body)


def test_bad_json_user_event_raises_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_user_event(UserAccount, b'{"data":')


# ------------------------------------------------------------ strict types


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        # timestamps are strings, never numbers
        (TradeItem, b'{"symbolId":"S","price":1,"timestamp":1735830245,"type":0,"volume":1}'),
        (QuoteItem, b'{"timestamp":1735830245}'),
        (HistoryBar, b'{"t":1735830245,"o":1,"h":1,"l":1,"c":1,"v":1}'),
        (
            Order,
            b'{"id":1,"accountId":1,"contractId":"C","creationTimestamp":0,'
            b'"status":1,"type":1,"side":0,"size":1}',
        ),
        # numbers are numbers, not strings
        (TradeItem, b'{"symbolId":"S","price":"1.5","timestamp":"t","type":0,"volume":1}'),
        (TradeItem, b'{"symbolId":"S","price":1.5,"timestamp":"t","type":0,"volume":1.5}'),
        (LoginResponse, b'{"token":42}'),
        (LoginResponse, b'{"success":"yes"}'),
        (LoginResponse, b'{"errorCode":"3"}'),
        (AccountSearchResponse, b'{"accounts":{"id":1}}'),
        (
            Account,
            b'{"id":1,"name":"A","balance":1,"canTrade":1,"isVisible":true,"simulated":true}',
        ),
        (HistoryBar, b'{"t":"x","o":1,"h":1,"l":1,"c":1,"v":1.5}'),
        # required fields
        (TradeItem, b'{"symbolId":"S","price":1.5,"timestamp":"t","type":0}'),
        (Contract, b'{"id":"C"}'),
        (LoginResponse, b"[]"),
    ],
)
def test_wrong_types_raise_validation_error(kind: type[msgspec.Struct], body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        decoder(kind).decode(body)


@pytest.mark.parametrize(
    "args",
    [
        b'["C"]',
        b'["C",{},{}]',
        b"[1,[]]",
        b'["C",[1]]',
        b'{"0":"C"}',
        b'["C",[{"symbolId":"S","price":1,"timestamp":"t","type":0,"volume":"1"}]]',
    ],
)
def test_hub_arguments_of_the_wrong_shape_raise_validation_error(args: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        TRADE_ARGS.decode(args)


def test_out_of_range_numbers_raise_validation_error() -> None:
    with pytest.raises(msgspec.ValidationError, match="out of range"):
        TRADE_ARGS.decode(
            b'["C",{"symbolId":"S","price":1e999,"timestamp":"t","type":0,"volume":1}]'
        )


def test_bad_ranges_are_left_to_validation() -> None:
    # The schema checks types; ranges (<= 0, negative, huge) are validation's
    # business, so such values must decode and reach it to be counted by reason.
    _, item = TRADE_ARGS.decode(
        b'["C",{"symbolId":"S","price":-0.0,"timestamp":"t","type":0,"volume":-5}]'
    )
    assert isinstance(item, TradeItem)
    assert item.price == 0.0
    assert math.copysign(1.0, item.price) == -1.0
    assert item.volume == -5
    huge = decoder(HistoryBar).decode(b'{"t":"x","o":1,"h":1,"l":1,"c":1,"v":%d}' % 2**62)
    assert huge.v == 2**62


def test_wire_types_are_frozen() -> None:
    with pytest.raises(AttributeError):
        ACCOUNT.balance = 0.0  # type: ignore[misc]


def test_wrapped_null_data_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_user_event(UserPosition, b'{"action":0,"data":null}')


def test_search_by_id_finds_its_contract_in_either_shape_and_no_other() -> None:
    bare = {"id": "CON.F.US.ENQ.H25", "name": "ENQH25", "description": "E-mini NASDAQ-100",
            "tickSize": 0.25, "tickValue": 5, "activeContract": True}  # fmt: skip
    other = {**bare, "id": "CON.F.US.MNQ.H25"}
    decode = decoder(ContractSearchByIdResponse).decode
    for answer in ({"contract": bare}, {"contracts": [other, bare]}):
        found = decode(msgspec.json.encode(answer)).find("CON.F.US.ENQ.H25")
        assert found is not None and (found.tick_value, found.symbol_id) == (5.0, "")
    assert decode(msgspec.json.encode({"contract": other})).find("CON.F.US.ENQ.H25") is None
    assert decode(b"{}").find("CON.F.US.ENQ.H25") is None
