"""The fault plan: the emulated board drops, corrupts, delays and refuses on purpose, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from drivers import FirmwareError, LinkError, LinkLost, LinkTimeout, open_board
from mock_hardware.emulator import build_firmware
from tests.conftest import EmulatorFactory, stop_process

SMALL = {"rows": "4", "cols": "4"}


def test_a_dropped_reply_still_executed_its_command() -> None:
    firmware = build_firmware("ideal", 0, SMALL | {"fault_drop_reply": "1"})
    before = firmware.array.conductance[1, 1]
    assert firmware.feed(b"PULS:SET 1,1,2.5,2.0,1e-6\n") == b""  # the reply is lost on the way back
    assert firmware.array.conductance[1, 1] > before  # but the pulse was applied: retrying would double it


def test_an_injected_firmware_error_executes_nothing() -> None:
    firmware = build_firmware("ideal", 0, SMALL | {"fault_firmware_error": "1"})
    before = firmware.array.conductance
    assert firmware.feed(b"PULS:SET 1,1,2.5,2.0,1e-6\n").startswith(b"ERR -240,")
    assert np.array_equal(firmware.array.conductance, before)


def test_a_corrupted_reply_differs_in_one_byte() -> None:
    clean = build_firmware("ideal", 0, SMALL).feed(b"MAP? 0,0,4,4,0.2,COND\n")
    corrupted = build_firmware("ideal", 0, SMALL | {"fault_corrupt_reply": "1"}).feed(b"MAP? 0,0,4,4,0.2,COND\n")
    assert len(clean) == len(corrupted)
    assert sum(a != b for a, b in zip(clean, corrupted, strict=True)) == 1


def test_fault_rates_are_seeded_and_near_their_probability() -> None:
    def dropped(seed: str) -> list[bool]:
        firmware = build_firmware("ideal", 0, SMALL | {"fault_drop_reply": "0.3", "fault_seed": seed})
        return [firmware.feed(b"*OPC?\n") == b"" for _ in range(2000)]

    first = dropped("5")
    assert first == dropped("5")  # the same seed drops the same replies
    assert first != dropped("6")
    assert 0.25 < np.mean(first) < 0.35


def test_bad_fault_fields_are_named() -> None:
    with pytest.raises(ValueError, match="drop_reply"):
        build_firmware("ideal", 0, SMALL | {"fault_drop_reply": "2"})
    with pytest.raises(ValueError, match="nonsense"):
        build_firmware("ideal", 0, SMALL | {"fault_nonsense": "1"})


def test_in_process_faults_reach_the_driver() -> None:
    with pytest.raises(LinkTimeout, match=r"emulator://.*\*IDN\?"):
        open_board("emulator://?preset=ideal&rows=4&cols=4&fault_drop_reply=1")
    with open_board("emulator://?preset=ideal&rows=4&cols=4") as board:
        board._transport._endpoint.firmware.faults = build_firmware(  # type: ignore[attr-defined]
            "ideal", 0, SMALL | {"fault_firmware_error": "1"}
        ).faults
        with pytest.raises(FirmwareError, match="injected fault") as error:
            board.read_cell(0, 0)
        assert error.value.code == -240


HANDSHAKE = 18  # commands a Board sends on connect in framed mode (11, + SYST:VERS? and 6 scales of 1.3)


def test_a_dropped_tcp_link_is_reconnected_with_the_line_state_restored(emulator_process: EmulatorFactory) -> None:
    close = f"close_after={HANDSHAKE + 1}"
    emulator = emulator_process(preset="ideal", extra=("--rows", "4", "--cols", "4", "--fault", close,
                                                       "--fault", "close_times=1"))  # fmt: skip
    with open_board(emulator.resource, timeout=2) as board:
        board.set_dac("GATE", 0, 1.0)  # the server closes the link after answering this one
        assert board.dac_voltage("GATE", 0) == pytest.approx(1.0, abs=0.01)  # set again after reconnecting
        assert board.link.stats.reconnects == 1
        applied = board.apply_pulses("SET", 2.5, 2.0, 1e-6, mask=np.eye(4, dtype=bool))
        assert int(board.query("SYST:PCNT?")) == applied == 4


def test_a_glitch_on_a_serial_link_loses_replies_and_the_session_goes_on(emulator_process: EmulatorFactory) -> None:
    close = f"close_after={HANDSHAKE + 1}"
    emulator = emulator_process(link="pty", preset="ideal", extra=("--rows", "4", "--cols", "4", "--fault", close,
                                                                   "--fault", "close_times=1"))  # fmt: skip
    with open_board(emulator.resource, timeout=0.5) as board:
        assert board.apply_pulses("SET", 2.5, 2.0, 1e-6, mask=np.eye(4, dtype=bool)) == 4  # its reply is lost
        assert int(board.query("SYST:PCNT?")) == 4  # answered from the kept reply, not applied again
        assert board.link.stats.applied_before_loss == 1


def test_a_board_that_stays_gone_is_a_clear_error_once_the_budget_is_spent(
    emulator_process: EmulatorFactory, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = emulator_process(preset="ideal", extra=("--rows", "4", "--cols", "4"))
    board = open_board(emulator.resource, timeout=1)
    board.link.reconnect_attempts = 2
    stop_process(emulator.process)  # the board goes away and does not come back
    with pytest.raises(LinkLost, match=r"2 reconnect attempts over .* failed .*check the cable") as error:
        board.read_cell(0, 0)
    assert emulator.resource in str(error.value)
    board.close()  # at once: nothing more is sent to an unreachable board
    assert "unreachable and could not be idled" in caplog.text


def test_the_server_refuses_the_first_connections(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process(preset="ideal", extra=("--rows", "4", "--cols", "4", "--fault", "refuse_connections=1"))
    with pytest.raises(LinkError, match=emulator.resource):
        open_board(emulator.resource, timeout=1)  # a failed open is reported at once, not retried
    with open_board(emulator.resource, timeout=1) as board:
        assert board.shape == (4, 4)


def test_chunked_replies_are_reassembled(emulator_process: EmulatorFactory) -> None:
    plain = emulator_process(preset="ideal", seed=2, extra=("--rows", "16", "--cols", "8"))
    chunked = emulator_process(preset="ideal", seed=2, extra=("--rows", "16", "--cols", "8", "--fault", "chunk_size=7"))
    with open_board(plain.resource) as a, open_board(chunked.resource) as b:
        np.testing.assert_array_equal(a.read_map(), b.read_map())


def test_a_late_reply_is_a_timeout_naming_the_command(emulator_process: EmulatorFactory) -> None:
    # The delay is far past the three attempts' timeouts (about 1.3 s in all): on a loaded machine
    # a late first reply must not reach the last attempt, which plain mode would take as its own.
    emulator = emulator_process(preset="ideal", extra=("--rows", "4", "--cols", "4"))
    with open_board(emulator.resource, timeout=2.0) as board:
        pass  # the handshake works without faults; now one that delays every reply
    slow = emulator_process(preset="ideal", extra=("--rows", "4", "--cols", "4", "--fault", "delay_reply=1",
                                                   "--fault", "delay_seconds=5"))  # fmt: skip
    with pytest.raises(LinkError, match=r"timed out after 0.3 s .*\*IDN\?"):
        open_board(slow.resource, timeout=0.3)
    assert board.closed
