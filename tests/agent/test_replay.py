"""`edge-agent replay`: the contract other tools rely on, on SKAB and NAB-style files."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from agent.cli import main
from agent.config import load_config
from agent.csvio import read_table
from agent.replay import replay_table
from agent.synthetic import iot

ROOT = Path(__file__).resolve().parents[2]
SKAB = ROOT.parent / "shared" / "datasets" / "skab"
SKAB_CFG = ROOT / "configs" / "skab.yaml"
NAB_CFG = ROOT / "configs" / "nab.yaml"
needs_skab = pytest.mark.skipif(not SKAB.is_dir(), reason=f"SKAB not found at {SKAB}")


def read_scores(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def input_rows(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines()[1:] if line.strip())


def check_contract(out: Path, inp: Path) -> list[dict[str, str]]:
    rows = read_scores(out)
    assert list(rows[0]) == ["timestamp", "score", "stage", "alert"]
    assert len(rows) == input_rows(inp)
    for r in rows:
        assert 0.0 <= float(r["score"]) <= 1.0
        assert r["stage"] in {"0", "1", "2", "3"}
        assert r["alert"] in {"0", "1"}
    return rows


def write_nab(path: Path, n: int = 1500, seed: int = 0) -> Path:
    s = iot(n=n, seed=seed)
    with open(path, "w") as fh:
        fh.write("timestamp,value\n")
        for t, v in zip(s.ts, s.values[:, 0], strict=True):
            fh.write(f"{int(t)},{v:.4f}\n")
    return path


@needs_skab
def test_replay_skab_file_contract(tmp_path: Path) -> None:
    inp = SKAB / "valve1" / "0.csv"
    out = tmp_path / "0.csv"
    assert main(["replay", "--config", str(SKAB_CFG), "--input", str(inp), "--scores", str(out),
                 "--warmup-rows", "400", "--no-progress"]) == 0
    rows = check_contract(out, inp)
    assert rows[0]["timestamp"] == "2020-03-09 10:14:33"
    assert all(r["stage"] == "0" and r["alert"] == "0" for r in rows[:400])
    assert any(r["stage"] != "0" for r in rows[400:])


@needs_skab
def test_replay_every_skab_file_mirrors_the_tree(tmp_path: Path) -> None:
    out = tmp_path / "scores"
    assert main(["replay", "--config", str(SKAB_CFG), "--input", str(SKAB), "--scores", str(out),
                 "--warmup-rows", "400", "--no-progress"]) == 0
    inputs = sorted(p.relative_to(SKAB) for p in SKAB.rglob("*.csv"))
    outputs = sorted(p.relative_to(out) for p in out.rglob("*.csv"))
    assert inputs == outputs and len(inputs) == 35
    for rel in inputs:
        check_contract(out / rel, SKAB / rel)


def test_replay_nab_style_file(tmp_path: Path) -> None:
    inp = write_nab(tmp_path / "nab.csv")
    out = tmp_path / "out.csv"
    assert main(["replay", "--config", str(NAB_CFG), "--input", str(inp), "--scores", str(out),
                 "--no-progress"]) == 0
    rows = check_contract(out, inp)
    assert sum(int(r["alert"]) for r in rows) > 0


def test_replay_is_deterministic(tmp_path: Path) -> None:
    inp = write_nab(tmp_path / "nab.csv")
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}.csv"
        assert main(["replay", "--config", str(NAB_CFG), "--input", str(inp),
                     "--scores", str(out), "--no-progress"]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_no_look_ahead(tmp_path: Path) -> None:
    """Scores of a prefix do not change when more rows are appended."""
    full = write_nab(tmp_path / "full.csv", n=1200)
    lines = full.read_text().splitlines()
    prefix = tmp_path / "prefix.csv"
    prefix.write_text("\n".join(lines[:701]) + "\n")
    cfg = load_config(NAB_CFG)
    a = replay_table(cfg, read_table(full))
    b = replay_table(cfg, read_table(prefix))
    assert np.array_equal(a.scores[:700], b.scores)
    assert np.array_equal(a.stages[:700], b.stages)
    assert np.array_equal(a.alerts[:700], b.alerts)


def test_flagged_points_do_not_move_the_baseline(tmp_path: Path) -> None:
    """Replacing a flagged spike by a bigger one changes nothing after it."""
    base = write_nab(tmp_path / "a.csv", n=900, seed=5)
    lines = base.read_text().splitlines()
    for i, bump in ((600, 1000.0), (600, 5000.0)):
        t, v = lines[i + 1].split(",")
        changed = lines.copy()
        changed[i + 1] = f"{t},{float(v) + bump}"
        (tmp_path / f"b{int(bump)}.csv").write_text("\n".join(changed) + "\n")
    cfg = load_config(NAB_CFG)
    r1 = replay_table(cfg, read_table(tmp_path / "b1000.csv"))
    r2 = replay_table(cfg, read_table(tmp_path / "b5000.csv"))
    assert r1.scores[600] >= 0.5 and r2.scores[600] >= 0.5
    # Stage 1 quarantined both spikes; stage 2 did not learn them (fused score >= threshold).
    assert np.array_equal(r1.scores[601:], r2.scores[601:])


def test_warmup_rows_only_learn(tmp_path: Path) -> None:
    inp = write_nab(tmp_path / "nab.csv", n=800)
    out = tmp_path / "out.csv"
    assert main(["replay", "--config", str(NAB_CFG), "--input", str(inp), "--scores", str(out),
                 "--warmup-rows", "300", "--no-progress"]) == 0
    rows = read_scores(out)
    assert all(float(r["score"]) == 0 and r["alert"] == "0" for r in rows[:300])
    # Stage 1 is warm from the first scored row on.
    assert rows[300]["stage"] != "0"


def test_directory_input_needs_directory_output(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    write_nab(d / "x.csv", n=50)
    (tmp_path / "file").write_text("x")
    assert main(["replay", "--config", str(NAB_CFG), "--input", str(d),
                 "--scores", str(tmp_path / "file"), "--no-progress"]) == 2


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("timestamp value\n1 2\n", "single column"),
        ("timestamp,other\n1,2\n2,3\n", "not in the file"),
        ("timestamp,value\nnot-a-time,1\nalso-bad,2\n", "no row has a usable timestamp"),
    ],
)
def test_unusable_input_exits_2_with_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str, message: str
) -> None:
    inp = tmp_path / "bad.csv"
    inp.write_text(content)
    code = main(["replay", "--config", str(NAB_CFG), "--input", str(inp),
                 "--scores", str(tmp_path / "o.csv"), "--no-progress"])
    assert code == 2
    assert message in caplog.text
    assert str(inp) in caplog.text or message == "not in the file"


def test_missing_input_exits_2(tmp_path: Path) -> None:
    assert main(["replay", "--config", str(NAB_CFG), "--input", str(tmp_path / "nope.csv"),
                 "--scores", str(tmp_path / "o.csv"), "--no-progress"]) == 2


def test_bad_rows_are_skipped_counted_and_still_written(tmp_path: Path) -> None:
    lines = write_nab(tmp_path / "g.csv", n=600).read_text().splitlines()
    lines[400] = lines[400].split(",")[0] + ",oops"  # non-numeric cell
    lines[401] = lines[401] + ",extra"  # wrong cell count
    lines[402] = "garbage-time,1.0"  # bad timestamp
    lines[403], lines[404] = lines[404], lines[403]  # out of order
    lines[406] = lines[405]  # duplicate timestamp
    lines[407] = lines[407].split(",")[0] + ",nan"
    inp = tmp_path / "bad.csv"
    inp.write_text("\n".join(lines) + "\n")
    cfg = load_config(NAB_CFG)
    table = read_table(inp)
    res = replay_table(cfg, table)
    rej = res.stats["rejected"]
    for reason in ("non_numeric", "bad_row", "bad_timestamp", "out_of_order",
                   "duplicate_timestamp", "non_finite"):
        assert rej.get(reason, 0) >= 1, (reason, rej)
    out = tmp_path / "o.csv"
    assert main(["replay", "--config", str(NAB_CFG), "--input", str(inp), "--scores", str(out),
                 "--no-progress"]) == 0
    check_contract(out, inp)
    assert np.isfinite(res.scores).all()


def test_semicolon_files_and_label_columns(tmp_path: Path) -> None:
    s = iot(n=500, seed=2)
    inp = tmp_path / "semi.csv"
    with open(inp, "w") as fh:
        fh.write("datetime;value;anomaly;changepoint\n")
        for t, v, lab in zip(s.ts, s.values[:, 0], s.labels, strict=True):
            fh.write(f"{int(t) * 1000};{v:.3f};{int(lab)};0\n")  # epoch milliseconds
    table = read_table(inp)
    assert table.columns == ["value"]
    assert set(table.labels) == {"anomaly", "changepoint"}
    assert table.ts[0] == s.ts[0]


def test_alert_events_written_as_jsonl(tmp_path: Path) -> None:
    inp = write_nab(tmp_path / "nab.csv")
    alerts = tmp_path / "alerts.jsonl"
    assert main(["replay", "--config", str(NAB_CFG), "--input", str(inp),
                 "--scores", str(tmp_path / "o.csv"), "--alerts", str(alerts),
                 "--no-progress"]) == 0
    import json

    events = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert events and {e["event"] for e in events} >= {"raise", "clear"}
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


def test_replay_with_stage3_model(tmp_path: Path) -> None:
    """The demo config (with its ONNX model) drives stage 3 through replay."""
    from agent.demo import default_config_path
    from agent.synthetic import multisensor

    cfg_dir = tmp_path / "cfg"
    shutil.copytree(default_config_path().parent, cfg_dir)
    inp = tmp_path / "ms.csv"
    multisensor(n=1200, seed=1).to_csv(str(inp))
    out = tmp_path / "o.csv"
    assert main(["replay", "--config", str(cfg_dir / "demo.yaml"), "--input", str(inp),
                 "--scores", str(out), "--no-progress"]) == 0
    rows = check_contract(out, inp)
    assert any(r["stage"] == "3" for r in rows)
