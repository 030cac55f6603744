"""SerialSource against real pseudo-terminals: decoding, garbage, bit flips, unplug/replug."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.sources.serial import SerialSource, SerialSourceConfig
from agent.types import Point
from firmware_bridge.simulator import DeviceSimulator, PtyDevice


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.fixture
def link(tmp_path: Path) -> Path:
    return tmp_path / "ttyDEV"


@pytest.fixture
def pty(link: Path) -> Iterator[PtyDevice]:
    device = PtyDevice(link)
    yield device
    device.close()


def make_source(port: Path, points: list[Point], **kw: object) -> SerialSource:
    cfg = SerialSourceConfig(
        port=str(port),
        reconnect_initial=0.02,
        reconnect_max=0.1,
        **kw,  # type: ignore[arg-type]
    )
    source = SerialSource(cfg, points.append)
    source.start()
    assert source.wait_connected(5)
    return source


@pytest.mark.serial
def test_points_from_binary_frames(pty: PtyDevice, link: Path) -> None:
    points: list[Point] = []
    source = make_source(link, points)
    try:
        sim = DeviceSimulator(device_id=42, channels=("temp", "rpm"), samples_per_frame=1)
        pty.write(sim.hello())
        for i in range(20):
            pty.write(sim.data([(float(i), 100.0 + i)]))
        assert wait_for(lambda: len(points) == 20)
        assert points[5].stream == "dev42" and points[5].values == {"temp": 5.0, "rpm": 105.0}
        # a burst of 2 s of device time arriving at once: the clock offset follows it down
        assert all(a.ts <= b.ts for a, b in itertools.pairwise(points))
        assert abs(points[-1].ts - time.time()) < 2
        stats = source.stats()
        assert stats["frames_ok"] == 21 and stats["points"] == 20 and stats["reconnects"] == 0
    finally:
        source.close()


@pytest.mark.serial
def test_garbage_and_bit_flips_lose_only_damaged_frames(pty: PtyDevice, link: Path) -> None:
    points: list[Point] = []
    source = make_source(link, points, stream="press")
    try:
        sim = DeviceSimulator(device_id=1, channels=("p",))
        pty.write(b"\xff\x13\x11 boot noise \x00\x00")
        pty.write(sim.hello())
        flipped = 0
        for i in range(50):
            wire = bytearray(sim.data([(float(i),)]))
            if i % 10 == 3:
                wire[len(wire) // 2] ^= 0x04
                flipped += 1
            pty.write(bytes(wire))
            if i % 10 == 7:
                pty.write(bytes(range(1, 200)))  # garbage with no delimiter
        assert wait_for(lambda: len(points) == 50 - flipped)
        assert [p.values["p"] for p in points if p.values["p"] % 10 == 3] == []
        assert points[0].stream == "press"
        stats = source.stats()
        assert stats["crc_errors"] + stats["framing_errors"] >= flipped + 5
        assert stats["frames_missed"] == flipped
    finally:
        source.close()


@pytest.mark.serial
def test_device_disappears_and_comes_back(link: Path) -> None:
    points: list[Point] = []
    first = PtyDevice(link)
    source = make_source(link, points)
    try:
        sim = DeviceSimulator(device_id=9, channels=("v",))
        first.write(sim.hello())
        for i in range(5):
            first.write(sim.data([(float(i),)]))
        assert wait_for(lambda: len(points) == 5)
        first.close()  # unplugged: master closed, symlink gone
        assert wait_for(lambda: source.stats()["read_errors"] >= 1)
        time.sleep(0.1)  # a few failed reopen attempts
        with PtyDevice(link) as second:  # plugged back in, new pty behind the same path
            assert wait_for(lambda: source.stats()["reconnects"] == 1)
            assert source.wait_connected(5)
            second.write(sim.hello())
            for i in range(5, 10):
                second.write(sim.data([(float(i),)]))
            assert wait_for(lambda: len(points) == 10)
        assert [p.values["v"] for p in points] == [float(i) for i in range(10)]
        stats = source.stats()
        assert stats["open_failures"] >= 1 and stats["reconnects"] == 1
    finally:
        source.close()


@pytest.mark.serial
def test_ascii_mode(pty: PtyDevice, link: Path) -> None:
    points: list[Point] = []
    source = make_source(link, points, mode="ascii", channels=("t", "h"))
    try:
        pty.write(b"1000,20.5,40\r\n1100,20.6,41\ngarbage\nt=21 h=42\n")
        assert wait_for(lambda: len(points) == 3)
        assert points[0].stream == "ttyDEV"
        assert points[2].values == {"t": 21.0, "h": 42.0}
        assert source.stats()["bad_lines"] == 1
    finally:
        source.close()


@pytest.mark.serial
def test_callback_errors_are_counted_and_reading_goes_on(
    pty: PtyDevice, link: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Point] = []

    def flaky(point: Point) -> None:
        seen.append(point)
        if len(seen) == 1:
            raise RuntimeError("sink full")

    cfg = SerialSourceConfig(port=str(link), reconnect_initial=0.02, reconnect_max=0.1)
    with SerialSource(cfg, flaky) as source:
        assert source.wait_connected(5)
        sim = DeviceSimulator(channels=("a",))
        pty.write(sim.hello() + sim.data([(1.0,)]) + sim.data([(2.0,)]))
        assert wait_for(lambda: len(seen) == 2)
        assert source.stats()["callback_errors"] == 1
    assert "sink full" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"port": ""}, "serial.port"),
        ({"baud": -1}, "serial.baud"),
        ({"parity": "X"}, "serial.parity"),
        ({"mode": "hex"}, "serial.mode"),
        ({"channels": ("a", "a")}, "serial.channels"),
        ({"stopbits": 3}, "serial.stopbits"),
        ({"reconnect_initial": 10.0}, "serial.reconnect_initial"),
    ],
)
def test_config_errors_name_the_key(kwargs: dict[str, object], key: str) -> None:
    args: dict[str, object] = {"port": "/dev/ttyUSB0", **kwargs}
    with pytest.raises(ConfigError) as info:
        SerialSourceConfig(**args)  # type: ignore[arg-type]
    assert info.value.key == key
