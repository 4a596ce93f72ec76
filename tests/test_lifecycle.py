"""The pure core as tables: causes in, one Ending out. No event loop here."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from wsfinally.ending import EndReason, is_wire_code
from wsfinally.lifecycle import (
    Exit,
    Lifecycle,
    close_code_for,
    echo_code,
    reason_for_exit,
    reason_for_frame_error,
)

R = EndReason
Step = Callable[[Lifecycle], object]


def peer_close(code: int) -> Step:
    return lambda life: life.close_received(code)


def sent(code: int) -> Step:
    return lambda life: life.close_sent(code)


def lost(we_closed: bool = False) -> Step:
    return lambda life: life.lost(we_closed=we_closed)


def cause(reason: EndReason, code: int | None = None) -> Step:
    return lambda life: life.observe(reason, code=code)


def echo() -> Step:
    """What the adapter does after a peer's close frame: send what is owed."""

    def step(life: Lifecycle) -> None:
        code = life.code_to_send()
        if code is not None:
            life.close_sent(code)

    return step


# (name, steps, reason, code, clean)
TABLE: list[tuple[str, list[Step], EndReason, int, bool]] = [
    ("peer_closes_1000_we_echo", [peer_close(1000), echo(), lost(True)], R.CLIENT_CLOSED, 1000, True),
    ("peer_closes_4001_we_echo", [peer_close(4001), echo()], R.CLIENT_CLOSED, 4001, True),
    ("peer_closes_without_code", [peer_close(0), echo()], R.CLIENT_CLOSED, 1005, True),
    ("peer_closes_then_transport_lost_before_echo", [peer_close(1000), lost()], R.CLIENT_CLOSED, 1000, False),
    ("fin", [lost()], R.CONNECTION_LOST, 1006, False),
    ("app_closes_peer_answers", [cause(R.SERVER_CLOSED), sent(1000), peer_close(1000), lost(True)], R.SERVER_CLOSED, 1000, True),
    ("app_closes_4321_peer_answers_1000", [cause(R.SERVER_CLOSED, 4321), sent(4321), peer_close(1000)], R.SERVER_CLOSED, 4321, True),
    ("app_closes_peer_never_answers", [cause(R.SERVER_CLOSED), sent(1000), lost(True)], R.SERVER_CLOSED, 1000, False),
    ("heartbeat_timeout_then_abort", [cause(R.HEARTBEAT_TIMEOUT), lost(True)], R.HEARTBEAT_TIMEOUT, 1006, False),
    ("protocol_error_1007", [cause(R.PROTOCOL_ERROR, 1007), sent(1007), lost(True)], R.PROTOCOL_ERROR, 1007, False),
    ("message_too_big", [cause(R.MESSAGE_TOO_BIG, 1009), sent(1009)], R.MESSAGE_TOO_BIG, 1009, False),
    ("handler_error_peer_answers", [cause(R.HANDLER_ERROR), sent(1011), peer_close(1011)], R.HANDLER_ERROR, 1011, True),
    ("cancelled_best_effort", [cause(R.CANCELLED), sent(1011), lost(True)], R.CANCELLED, 1011, False),
    ("cancelled_transport_already_gone", [lost(), cause(R.CANCELLED)], R.CONNECTION_LOST, 1006, False),
    # races: the first cause observed wins
    ("race_peer_close_then_shutdown", [peer_close(1000), cause(R.SERVER_SHUTDOWN), echo()], R.CLIENT_CLOSED, 1000, True),
    ("race_shutdown_then_peer_close", [cause(R.SERVER_SHUTDOWN), sent(1001), peer_close(1000)], R.SERVER_SHUTDOWN, 1001, True),
    ("race_shutdown_then_fin", [cause(R.SERVER_SHUTDOWN), sent(1001), lost()], R.SERVER_SHUTDOWN, 1001, False),
    ("race_fin_then_shutdown", [lost(), cause(R.SERVER_SHUTDOWN)], R.CONNECTION_LOST, 1006, False),
    ("race_fin_then_handler_error", [lost(), cause(R.HANDLER_ERROR)], R.CONNECTION_LOST, 1006, False),
    ("race_heartbeat_then_peer_close", [cause(R.HEARTBEAT_TIMEOUT), peer_close(1000)], R.HEARTBEAT_TIMEOUT, 1006, False),
    ("race_idle_then_fin", [cause(R.IDLE_TIMEOUT), sent(1000), lost()], R.IDLE_TIMEOUT, 1000, False),
    ("race_frame_error_close_then_its_own_transport_close", [lost(True), cause(R.PROTOCOL_ERROR, 1002), sent(1002)], R.PROTOCOL_ERROR, 1002, False),
    ("nothing_observed_handler_returned", [], R.SERVER_CLOSED, 1006, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "steps", "reason", "code", "clean"), TABLE, ids=[t[0] for t in TABLE]
)
def test_causes_decide_one_ending(
    name: str, steps: list[Step], reason: EndReason, code: int, clean: bool
) -> None:
    life = Lifecycle(opened_at=10.0)
    for step in steps:
        step(life)
    ending = life.finish(12.5, messages_in=3, messages_out=2, bytes_in=30, bytes_out=20)
    assert ending is not None
    assert (ending.reason, ending.code, ending.clean) == (reason, code, clean)
    assert ending.duration == 2.5
    assert (ending.messages_in, ending.messages_out, ending.bytes_in, ending.bytes_out) == (
        3,
        2,
        30,
        20,
    )


def test_finish_returns_the_ending_exactly_once() -> None:
    life = Lifecycle(0.0)
    life.lost()
    assert life.finish(1.0) is not None
    assert life.finish(2.0) is None
    assert life.finish(3.0) is None


def test_causes_after_finish_are_ignored() -> None:
    life = Lifecycle(0.0)
    life.observe(R.SERVER_SHUTDOWN)
    first = life.finish(1.0)
    assert not life.observe(R.HANDLER_ERROR)
    assert not life.lost()
    assert first is not None and first.reason is R.SERVER_SHUTDOWN
    assert life.reason is R.SERVER_SHUTDOWN


def test_observe_reports_whether_it_decided() -> None:
    life = Lifecycle(0.0)
    assert life.observe(R.IDLE_TIMEOUT) is True
    assert life.observe(R.HEARTBEAT_TIMEOUT) is False
    assert life.close_received(1000) is False
    assert life.reason is R.IDLE_TIMEOUT


def test_close_idempotency_first_code_sent_is_kept() -> None:
    life = Lifecycle(0.0)
    life.observe(R.SERVER_CLOSED, code=4000)
    life.close_sent(4000)
    life.close_sent(1000)
    assert life.code_sent == 4000
    assert life.code_to_send() is None


@pytest.mark.parametrize(
    ("reason", "owed"),
    [
        (R.SERVER_CLOSED, 1000),
        (R.SERVER_SHUTDOWN, 1001),
        (R.HANDLER_ERROR, 1011),
        (R.CANCELLED, 1011),
        (R.IDLE_TIMEOUT, 1000),
        (R.SLOW_CONSUMER, 1008),
        (R.HEARTBEAT_TIMEOUT, None),
        (R.CONNECTION_LOST, None),
    ],
)
def test_code_owed_to_the_peer_by_reason(reason: EndReason, owed: int | None) -> None:
    life = Lifecycle(0.0)
    life.observe(reason)
    assert life.code_to_send() == owed
    assert close_code_for(reason) == owed


def test_nothing_is_owed_once_the_transport_is_gone() -> None:
    life = Lifecycle(0.0)
    life.observe(R.SERVER_SHUTDOWN)
    life.lost()
    assert life.code_to_send() is None


@pytest.mark.parametrize(
    ("received", "answer"),
    [(1000, 1000), (1001, 1001), (4999, 4999), (1005, 1000), (1006, 1000), (999, 1000)],
)
def test_echo_code_answers_with_the_peers_code_when_it_may_be_sent(
    received: int, answer: int
) -> None:
    assert echo_code(received) == answer


@pytest.mark.parametrize(
    ("code", "ok"),
    [
        (1000, True),
        (1004, False),
        (1005, False),
        (1006, False),
        (1015, False),
        (1014, True),
        (2999, False),
        (3000, True),
        (4999, True),
        (5000, False),
    ],
)
def test_wire_codes_follow_rfc6455_7_4(code: int, ok: bool) -> None:
    assert is_wire_code(code) is ok


def test_frame_errors_map_to_reasons() -> None:
    assert reason_for_frame_error(1009) is R.MESSAGE_TOO_BIG
    assert reason_for_frame_error(1002) is R.PROTOCOL_ERROR
    assert reason_for_frame_error(1007) is R.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("how", "lost", "shutting_down", "reason"),
    [
        (Exit.RETURNED, False, False, R.SERVER_CLOSED),
        (Exit.RETURNED, False, True, R.SERVER_CLOSED),
        (Exit.RAISED, False, False, R.HANDLER_ERROR),
        (Exit.RAISED, True, False, R.CONNECTION_LOST),
        (Exit.CANCELLED, False, False, R.CANCELLED),
        (Exit.CANCELLED, False, True, R.SERVER_SHUTDOWN),
        (Exit.CANCELLED, True, True, R.CONNECTION_LOST),
        (Exit.RETURNED, True, False, R.CONNECTION_LOST),
    ],
)
def test_handler_exit_classification(
    how: Exit, lost: bool, shutting_down: bool, reason: EndReason
) -> None:
    assert reason_for_exit(how, transport_lost=lost, shutting_down=shutting_down) is reason


def test_lifecycle_module_imports_no_asyncio() -> None:
    import ast
    import inspect

    import wsfinally.ending
    import wsfinally.lifecycle

    for module in (wsfinally.lifecycle, wsfinally.ending):
        tree = ast.parse(inspect.getsource(module))
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not {"asyncio", "aiohttp"} & {n.split(".")[0] for n in names}, module.__name__
