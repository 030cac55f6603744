"""edge-bridge: usage, simulate through a real pty, and run against a real Mosquitto."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from agent._version import __version__
from agent.sources.serial import SerialSource, SerialSourceConfig
from agent.types import Point
from firmware_bridge.batch import decode_batch
from firmware_bridge.cli import main
from firmware_bridge.framing import FrameDecoder
from firmware_bridge.simulator import read_csv

ROOT = Path(__file__).resolve().parents[2]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "simulate" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["run", "--port", "/dev/null"]) == 2
    assert main(["simulate", "--channels", "0", "--count", "1"]) == 2


def test_simulate_to_stdout_with_csv(tmp_path: Path) -> None:
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("time;temp;label;rpm\n0;20,5;x;100\n1;21;y;110\n2;22;z;120\n")
    # ';' separated with decimal commas: only the columns that parse are kept
    assert read_csv(csv_file)[0] == ("time", "rpm")
    csv_file.write_text("temp,label,rpm\n20.5,x,100\n21,y,110\n")
    names, rows = read_csv(csv_file)
    assert names == ("temp", "rpm") and rows == [(20.5, 100.0), (21.0, 110.0)]
    result = subprocess.run(
        [sys.executable, "-m", "firmware_bridge", "simulate", "--csv", str(csv_file),
         "--rate", "1000", "--count", "5"],
        capture_output=True, cwd=ROOT, timeout=30, check=True,
    )  # fmt: skip
    frames = FrameDecoder().feed(result.stdout)
    assert [f.type.name for f in frames] == ["HELLO", "DATA", "DATA"]


def start_simulator(*args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_bridge", "simulate", "--pty", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


def wait_for(cond: object, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


@pytest.mark.serial
def test_simulate_pty_into_serial_source(tmp_path: Path) -> None:
    link = tmp_path / "ttySIM"
    args = "--rate 200 --channels 3 --count 100 --corrupt-rate 0.2 --linger 3 --hello-every 0.2"
    proc, path = start_simulator("--link", str(link), *args.split())
    try:
        assert path == str(link)
        points: list[Point] = []
        cfg = SerialSourceConfig(port=path, reconnect_initial=0.02, reconnect_max=0.1)
        with SerialSource(cfg, points.append) as source:
            assert wait_for(lambda: len(points) > 20 and points[-1].values, 10)
            stats = source.stats()
        assert points[0].stream == "dev1" and set(points[0].values) <= {"ch0", "ch1", "ch2"}
        assert stats["frames_ok"] > 20
    finally:
        proc.terminate()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        pytest.skip("mosquitto is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
            except OSError:
                return False
            return True

        assert wait_for(up, 5)
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.serial
@pytest.mark.network
def test_run_publishes_batches_to_mqtt(tmp_path: Path, broker: int) -> None:
    received: list[bytes] = []
    got = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("sensors/#", qos=1)

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        received.append(msg.payload)
        got.set()

    sub.on_message = on_message
    sub.connect("127.0.0.1", broker)
    sub.loop_start()
    args = "--rate 100 --channels 2 --samples-per-frame 5 --hello-every 0.2 --count 1000"
    proc, path = start_simulator(*args.split())
    try:
        code = main(["run", "--port", path, "--mqtt-host", "127.0.0.1", "--mqtt-port",
                     str(broker), "--topic", "sensors/{stream}", "--batch-size", "10",
                     "--batch-ms", "200", "--duration", "1.5"])  # fmt: skip
        assert code == 0
        assert got.wait(5)
    finally:
        proc.terminate()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        sub.loop_stop()
        sub.disconnect()
    batches = [decode_batch(p) for p in received]
    assert batches[0].stream == "dev1" and batches[0].channels == ("ch0", "ch1")
    assert sum(len(b.rows) for b in batches) >= 20
    assert all(len(b.rows) <= 10 for b in batches)
