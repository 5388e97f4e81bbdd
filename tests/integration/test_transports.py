"""One code path to the board: the emulator as a separate process over a real TCP socket (pyvisa) and a
real pty (pyvisa ASRL and pyserial), and in process; plus the server's own behaviour.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import pyvisa

from drivers import Board, FirmwareError, LimitError, LinkError, LinkTimeout, Region, open_board
from mock_hardware.emulator import build_firmware
from mock_hardware.server import EmulatorServer
from tests.conftest import EmulatorFactory, EmulatorLauncher, EmulatorProcess, stop_process

TRANSPORTS = ["tcp-pyvisa", "pty-pyvisa", "pty-pyserial", "in-process"]
SEED = 7
WIDTH = 1e-4


def fresh_board_resource(launch: EmulatorFactory, transport: str, seed: int, preset: str | None = None) -> str:
    """A resource string reaching a newly started emulator through ``transport``."""
    if transport == "in-process":
        return f"emulator://?seed={seed}" + (f"&preset={preset}" if preset else "")
    emulator = launch("tcp" if transport.startswith("tcp") else "pty", seed=seed, preset=preset)
    return emulator.serial_resource if transport == "pty-pyserial" else emulator.resource


def scripted_session(board: Board) -> dict[str, Any]:
    """The same operations on any transport; every result, for comparison."""
    results: dict[str, Any] = {"map": board.read_map()}  # first operation after connect
    results["identity"] = str(board.identity)
    results["shape"] = board.shape
    results["limits"] = board.limits.model_dump()
    results["cell before"] = board.read_cell(3, 5, 0.2)
    board.set_pulse(3, 5, 2.5, 3.0, WIDTH)
    results["cell after SET"] = board.read_cell(3, 5, 0.2)
    board.reset_pulse(3, 5, 3.0, 5.0, WIDTH)
    results["cell after RESET"] = board.read_cell(3, 5, -0.2)
    results["region current"] = board.read_map(0.1, Region(10, 20, 4, 8), quantity="current")
    results["vmm"] = board.vmm(np.random.default_rng(1).uniform(-0.2, 0.2, (50, board.shape[0])))
    mask = np.zeros(board.shape, dtype=bool)
    mask[::7, ::5] = True
    results["batch count"] = board.apply_pulses("SET", 2.0, np.linspace(0.5, 4.0, board.shape[1]), WIDTH, mask)
    results["map after batch"] = board.read_map()
    results["sweep"] = board.iv_sweep(0, 0, np.linspace(-1.5, 1.5, 13), v_gate=1.5, width=1e-5)
    board.set_dac("ROW", 0, 0.123)
    results["dac"] = board.dac_voltage("ROW", 0)
    board.set_dac("GATE", 0, 5.0)
    board.select_row(0)
    board.select_column(0)
    results["adc"] = board.sample_adc(0, 1e4)
    with pytest.raises(FirmwareError) as refused:
        board.query("NO:SUCH:CMD")
    results["error"] = (refused.value.code, refused.value.message)
    with pytest.raises(LimitError):
        board.set_pulse(0, 0, 9.0, 1.0, WIDTH)
    results["after a refusal"] = board.query("*OPC?")
    return results


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """The scripted session, run once per transport against a fresh emulator with the same seed."""
    launcher = EmulatorLauncher(tmp_path_factory.mktemp("session-emulators"))
    results = {}
    try:
        for transport in TRANSPORTS:
            with open_board(fresh_board_resource(launcher, transport, SEED), timeout=10) as board:
                results[transport] = scripted_session(board)
        yield results
    finally:
        launcher.stop_all()


@pytest.mark.parametrize("transport", TRANSPORTS[:3])
def test_the_same_seed_gives_the_same_map_on_every_transport(
    sessions: dict[str, dict[str, Any]], transport: str
) -> None:
    reference = sessions["in-process"]["map"]
    assert reference.shape == (128, 64)
    assert np.ptp(reference) > 0  # a real map: noise and defects, so equality means something
    np.testing.assert_array_equal(sessions[transport]["map"], reference)


@pytest.mark.parametrize("transport", TRANSPORTS[:3])
def test_the_same_session_gives_the_same_results_on_every_transport(
    sessions: dict[str, dict[str, Any]], transport: str
) -> None:
    reference, results = sessions["in-process"], sessions[transport]
    assert results.keys() == reference.keys()
    for key, expected in reference.items():
        if isinstance(expected, np.ndarray):
            np.testing.assert_array_equal(results[key], expected, err_msg=key)
        else:
            assert results[key] == expected, key


def test_the_session_did_what_it_says(sessions: dict[str, dict[str, Any]]) -> None:
    """The compared results are real measurements, not empty or error placeholders."""
    results = sessions["in-process"]
    assert results["identity"].startswith("MEMHIL EMU-1T1R")
    assert results["shape"] == (128, 64)
    assert results["vmm"].shape == (50, 64)
    assert results["region current"].shape == (4, 8)
    assert results["batch count"] == 19 * 13
    assert results["sweep"].shape == (13,)
    assert np.sign(results["sweep"][0]) == -1 and np.sign(results["sweep"][-1]) == 1
    assert results["dac"] == pytest.approx(0.123, abs=1e-3)
    assert results["adc"].current > 0 and not results["adc"].saturated
    assert results["error"][0] == -113
    assert results["after a refusal"] == "1"


@pytest.mark.parametrize("transport", TRANSPORTS[:3])
def test_a_pulse_persists_across_client_connections(emulator_process: EmulatorFactory, transport: str) -> None:
    resource = fresh_board_resource(emulator_process, transport, seed=3, preset="ideal")
    with open_board(resource, timeout=10) as first:
        before = first.read_cell(2, 3, 0.2)
        first.set_pulse(2, 3, 2.5, 3.0, WIDTH)
        after = first.read_cell(2, 3, 0.2)
    assert after > 1.5 * before
    with open_board(resource, timeout=10) as second:
        assert second.read_cell(2, 3, 0.2) == after
        assert second.read_cell(2, 2, 0.2) == before  # its neighbour was never pulsed


def test_several_clients_in_turn_over_tcp(emulator_process: EmulatorFactory) -> None:
    resource = emulator_process("tcp", seed=2, preset="ideal").resource
    conductances = []
    for client in range(4):
        with open_board(resource, timeout=10) as board:
            board.set_pulse(client, 0, 2.5, 1.0 + client, WIDTH)
            conductances.append([board.read_cell(row, 0, 0.2) for row in range(4)])
    # each client sees the cells its predecessors programmed
    assert conductances[-1] == [conductances[row][row] for row in range(4)]
    assert conductances[-1] == sorted(conductances[-1])  # higher gate, higher conductance


def test_several_clients_in_turn_over_one_pty(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process("pty", seed=2, preset="ideal")
    identities = []
    for resource in (emulator.serial_resource, emulator.resource, emulator.serial_resource):
        with open_board(resource, timeout=10) as board:
            identities.append(str(board.identity))
            assert board.query("*OPC?") == "1"
    assert len(set(identities)) == 1


def test_one_client_at_a_time_a_second_is_refused_at_once(emulator_process: EmulatorFactory) -> None:
    """Regression (issue 10): a second client was accepted and never answered while the first stayed."""
    host, port = emulator_process("tcp", seed=1).tcp_address
    with socket.create_connection((host, port), timeout=5) as first:
        first.sendall(b"*OPC?\n")
        assert first.recv(100) == b"1\n"
        with socket.create_connection((host, port), timeout=5) as second:
            assert second.makefile("rb").readline().startswith(b'ERR -221,"busy')  # at once, then closed
            assert second.recv(100) == b""
        first.sendall(b"*OPC?\n")
        assert first.recv(100) == b"1\n"  # the first is still served
    with socket.create_connection((host, port), timeout=5) as third:  # the first has gone: served
        third.sendall(b"*OPC?\n")
        assert third.recv(100) == b"1\n"


# ----------------------------------------------------------------------------- a client that knows only the doc


def test_a_plain_pyvisa_client_reads_the_map(emulator_process: EmulatorFactory) -> None:
    """docs/wire-protocol.md's own example, against the emulator, gives the driver's map."""
    resource = emulator_process("tcp", seed=11).resource
    manager = pyvisa.ResourceManager("@py")
    instrument: Any = manager.open_resource(resource, read_termination="\n", write_termination="\n", timeout=10_000)
    try:
        assert instrument.query("*IDN?").split(",")[:2] == ["MEMHIL", "EMU-1T1R"]
        rows, cols = (int(f) for f in instrument.query("SYST:ARR?").split(","))
        instrument.write(f"MAP? 0,0,{rows},{cols},0.25,COND")
        g = instrument.read_binary_values(datatype="f", is_big_endian=False, container=np.array).reshape(rows, cols)
        assert instrument.query("*OPC?") == "1"  # the block's line end was consumed: still in step
        assert instrument.query("PULS:SET 0,0,9,1.2,1e-6").startswith('ERR -222,"')
    finally:
        instrument.close()
        manager.close()
    with open_board("emulator://?seed=11", compact=False) as board:  # MAP?, as the example sends
        np.testing.assert_array_equal(g, board.read_map(0.25))


# ----------------------------------------------------------------------------- link failures


@pytest.fixture
def silent_tcp_port() -> Iterator[int]:
    """A port whose listener completes connections (through the backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener.getsockname()[1]


@pytest.fixture
def silent_pty() -> Iterator[str]:
    """A pty nobody answers on; its device path."""
    master, slave = os.openpty()
    try:
        yield os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def assert_times_out(resource: str) -> None:
    with pytest.raises(LinkTimeout) as caught:
        open_board(resource, timeout=0.5)
    assert caught.value.resource == resource
    assert caught.value.command == "*IDN?"
    assert resource in str(caught.value) and "'*IDN?'" in str(caught.value)


def test_a_silent_lan_board_times_out_naming_resource_and_command(silent_tcp_port: int) -> None:
    assert_times_out(f"TCPIP::127.0.0.1::{silent_tcp_port}::SOCKET")


def test_a_silent_serial_board_times_out_through_pyserial(silent_pty: str) -> None:
    assert_times_out(f"serial://{silent_pty}")


def test_a_silent_serial_board_times_out_through_pyvisa(silent_pty: str) -> None:
    assert_times_out(f"ASRL{silent_pty}::INSTR")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    "resource",
    [f"TCPIP::127.0.0.1::{free_port()}::SOCKET", "serial:///dev/no-such-port", "ASRL/dev/no-such-port::INSTR",
     "nosuchscheme://board"],
    ids=["closed-tcp-port", "missing-serial-port-pyserial", "missing-serial-port-pyvisa", "unknown-endpoint"],
)  # fmt: skip
def test_an_unreachable_board_is_a_link_error_naming_it(resource: str) -> None:
    with pytest.raises(LinkError) as caught:
        open_board(resource, timeout=2)
    assert not isinstance(caught.value, LinkTimeout)
    assert resource in str(caught.value)


def test_an_unknown_resource_string_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match="TCPIP::HOST::PORT::SOCKET"):
        open_board("COM3")


# ----------------------------------------------------------------------------- the server process


def test_server_binds_loopback_by_default(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process("tcp", listen="0")
    host, port = emulator.tcp_address
    assert host == "127.0.0.1"
    with socket.create_connection((host, port), timeout=5) as client:
        client.sendall(b"*OPC?\n")
        assert client.recv(100) == b"1\n"


def test_server_exits_when_stdin_closes(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process("tcp")
    assert emulator.process.stdin is not None
    emulator.process.stdin.close()
    assert emulator.process.wait(timeout=10) == 0


def serving(emulator: EmulatorProcess) -> EmulatorProcess:
    """The emulator once it has answered a client: its serve loop (and signal handling) is running."""
    resource = emulator.serial_resource if emulator.resource.startswith("ASRL") else emulator.resource
    with open_board(resource, timeout=10) as board:
        assert board.query("*OPC?") == "1"
    return emulator


@pytest.mark.parametrize("link", ["tcp", "pty"])
def test_server_exits_on_sigterm(emulator_process: EmulatorFactory, link: str) -> None:
    emulator = serving(emulator_process(link))
    emulator.process.send_signal(signal.SIGTERM)
    assert emulator.process.wait(timeout=10) == 0


@pytest.mark.parametrize("link", ["tcp", "pty"])
def test_server_handles_sigterm_from_the_moment_it_is_ready(link: str) -> None:
    server = EmulatorServer(build_firmware("ideal", 0, {"rows": "2", "cols": "2"}), watch_stdin=False)
    handler_when_ready = []

    def announce(resource: str) -> None:
        handler_when_ready.append(signal.getsignal(signal.SIGTERM))
        server.stop.requested = True  # serve no further

    if link == "tcp":
        server.serve_tcp("127.0.0.1", 0, announce)
    else:
        server.serve_pty(announce)
    assert handler_when_ready == [server.stop]


def test_server_exits_on_sigterm_while_a_client_is_connected(emulator_process: EmulatorFactory) -> None:
    emulator = emulator_process("tcp")
    with socket.create_connection(emulator.tcp_address, timeout=5) as client:
        client.sendall(b"*OPC?\n")
        assert client.recv(100) == b"1\n"
        emulator.process.send_signal(signal.SIGTERM)
        assert emulator.process.wait(timeout=10) == 0
        assert client.recv(100) == b""  # the server closed the link


def test_server_refuses_bad_options() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mock_hardware", "serve", "--tcp", "0", "--preset", "no-such-preset"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=30)
    finally:
        stop_process(process)
    assert process.returncode == 2
    assert b"no-such-preset" in stderr


def test_a_client_leaving_idles_the_board(emulator_process: EmulatorFactory) -> None:
    address = emulator_process("tcp").tcp_address
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(b"DAC:VOLT ROW,0,1.0\nDAC:VOLT? ROW,0\n")
        assert client.makefile("rb").readline() == b"OK\n"
    with socket.create_connection(address, timeout=5) as client:
        client.sendall(b"DAC:VOLT? ROW,0\n")
        assert client.recv(100) == b"0.0\n"


def test_a_truncated_command_is_discarded_after_a_quiet_second(emulator_process: EmulatorFactory) -> None:
    with socket.create_connection(emulator_process("tcp").tcp_address, timeout=5) as client:
        replies = client.makefile("rb")
        client.sendall(b"PULS:SET 0,0,2.5")  # and then nothing
        assert replies.readline().startswith(b'ERR -160,"')
        client.sendall(b"*OPC?\n")
        assert replies.readline() == b"1\n"


def test_a_malformed_command_gets_exactly_one_reply_even_after_a_quiet_second(
    emulator_process: EmulatorFactory,
) -> None:
    with socket.create_connection(emulator_process("tcp").tcp_address, timeout=5) as client:
        replies = client.makefile("rb")
        client.sendall(b"VMM? 0,0,1,1,1,#x")
        assert replies.readline().startswith(b"ERR -160,")
        time.sleep(1.5)  # longer than the server's 1 s quiet timeout
        client.sendall(b"*OPC?\n")
        assert replies.readline() == b"1\n"


# ----------------------------------------------------------------------------- framed mode


def framing_session(board: Board) -> dict[str, Any]:
    """A map read, a VMM and a pulse batch: every result, for comparison across modes and transports."""
    framed = board.link.framed
    if not framed:
        # A framed handshake has one command more (SYST:FRAM), and every command takes the emulated
        # board's simulated latency: one more plain command keeps the two boards' clocks in step.
        assert board.query("*OPC?") == "1"
    results: dict[str, Any] = {"framed": framed, "map": board.read_map()}
    results["vmm"] = board.vmm(np.random.default_rng(2).uniform(-0.2, 0.2, (20, board.shape[0])))
    mask = np.zeros(board.shape, dtype=bool)
    mask[1::9, 2::7] = True
    results["batch count"] = board.apply_pulses("SET", 2.5, np.linspace(1.0, 4.0, board.shape[1]), WIDTH, mask)
    results["map after batch"] = board.read_map(0.1, Region(0, 0, 40, board.shape[1]))
    results["pulse count"] = int(board.query("SYST:PCNT?"))
    return results


@pytest.fixture(scope="module")
def framing_sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], dict[str, Any]]]:
    """The session in framed mode (the default) and in plain mode, per transport, each on a fresh emulator."""
    launcher = EmulatorLauncher(tmp_path_factory.mktemp("framing-emulators"))
    results = {}
    try:
        for transport in TRANSPORTS:
            for mode, framing in (("default", None), ("plain", False)):
                resource = fresh_board_resource(launcher, transport, SEED)
                with open_board(resource, timeout=10, framing=framing) as board:
                    results[transport, mode] = framing_session(board)
        yield results
    finally:
        launcher.stop_all()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_framed_and_plain_modes_give_the_same_results(
    framing_sessions: dict[tuple[str, str], dict[str, Any]], transport: str
) -> None:
    framed, plain = framing_sessions[transport, "default"], framing_sessions[transport, "plain"]
    assert framed["framed"] is True  # the emulator offers frames: a board uses them unless told not to
    assert plain["framed"] is False
    reference = framing_sessions["in-process", "plain"]
    assert reference["batch count"] == 15 * 9 == reference["pulse count"]
    assert np.ptp(reference["map"]) > 0 and not np.array_equal(reference["map"][:40], reference["map after batch"])
    for mode, results in (("framed", framed), ("plain", plain)):
        for key, expected in reference.items():
            if key == "framed":
                continue
            if isinstance(expected, np.ndarray):
                np.testing.assert_array_equal(results[key], expected, err_msg=f"{mode}: {key}")
            else:
                assert results[key] == expected, f"{mode}: {key}"


GLITCHES = ("--fault", "drop_reply=0.05", "--fault", "corrupt_reply=0.05", "--fault", "seed=3")


@pytest.mark.parametrize("transport", TRANSPORTS[:3])
def test_on_a_link_that_loses_and_damages_replies_every_pulse_is_applied_once(
    emulator_process: EmulatorFactory, transport: str
) -> None:
    """5 % of replies lost and 5 % damaged, a short timeout: the work completes, nothing is applied twice."""
    link = "tcp" if transport.startswith("tcp") else "pty"
    emulator = emulator_process(link, seed=5, preset="ideal", extra=("--rows", "16", "--cols", "16", *GLITCHES))
    resource = emulator.serial_resource if transport == "pty-pyserial" else emulator.resource
    rng = np.random.default_rng(4)
    confirmed, maps = 0, []
    with open_board(resource, timeout=0.5) as board:
        assert board.link.framed
        for _ in range(30):
            mask = rng.random(board.shape) < 0.25
            confirmed += board.apply_pulses("SET", 2.5, float(rng.uniform(1.0, 3.0)), 1e-6, mask=mask)
            maps.append(board.read_map())
        applied = int(board.query("SYST:PCNT?"))
        stats = board.link.stats
    assert confirmed > 30 * 16 * 16 * 0.2
    assert applied == confirmed  # every pulse the host was told of, and not one more
    assert stats.retries > 0  # the faults struck, and were survived
    assert all(m.shape == (16, 16) and np.isfinite(m).all() and (m > 0).all() for m in maps)


def test_closing_one_pyvisa_board_leaves_another_open(emulator_process: EmulatorFactory) -> None:
    """pyvisa shares one ResourceManager per backend in a process: closing a board must close its own
    session only, or every other board of the process (a multi-board training run) loses its link."""
    first, second = emulator_process("tcp", seed=1), emulator_process("tcp", seed=2)
    with open_board(first.resource) as a, open_board(second.resource) as b:
        a.close()
        assert b.read_map().shape == b.shape
        assert b.link.stats.reconnects == 0 and b.link.stats.retries == 0  # not rescued by a reconnect
