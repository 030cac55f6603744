"""``edge-agent``: run, replay, demo and config check.

Exit codes: 0 success, 1 runtime failure, 2 unusable input or configuration.
Logs go to stderr; data (scores, alerts) to files or stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agent._version import __version__
from agent.errors import AgentError, ConfigError, InputError, ModelLoadError

log = logging.getLogger("agent")

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edge-agent",
        description="Streaming anomaly detection for sensor gateways: "
        "z-score -> River -> ONNX autoencoder.",
    )
    p.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    p.add_argument("--log-level", default=None,
                   choices=["debug", "info", "warning", "error"],
                   help="override the config's agent.log_level")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the agent on its configured source")
    r.add_argument("--config", required=True, help="agent YAML config")
    r.add_argument("--input", default=None,
                   help="JSON-lines points to read ('-' = stdin) instead of the configured source")

    rp = sub.add_parser("replay", help="stream CSV file(s) through the cascade, write scores")
    rp.add_argument("--config", required=True, help="agent YAML config")
    rp.add_argument("--input", required=True, help="CSV file or directory of CSV files")
    rp.add_argument("--scores", required=True, help="output CSV file (or directory)")
    rp.add_argument("--stream", default=None,
                    help="stream id of the config to use (default: the first)")
    rp.add_argument("--warmup-rows", type=int, default=0,
                    help="first N rows of each file only learn (written with score 0, alert 0)")
    rp.add_argument("--alerts", default=None, help="also write alert events as JSON lines here")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    rp.add_argument("--kind", choices=("sensors", "events", "logs"), default="sensors",
                    help="input kind: sensor CSV (default), event CSV timestamp,source,event, "
                    "or log lines (a .log file or a directory of them)")

    d = sub.add_parser("demo", help="end-to-end demo on a synthetic labelled stream")
    d.add_argument("--config", default=None, help="agent YAML config (default: built-in)")
    d.add_argument("--points", type=int, default=4000, help="points to stream")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--out", default="demo-out", help="directory for the plot and alert log")
    d.add_argument("--offline", action="store_true",
                   help="no broker: drive the engine directly (the original demo)")
    d.add_argument("--rate", type=float, default=500.0,
                   help="live demo: points/s the simulated device publishes")

    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    chk = csub.add_parser("check", help="validate config file(s); exit 2 on the first error")
    chk.add_argument("files", nargs="+")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "config" and getattr(args, "config_command", None) is None:
        parser.parse_args(["config", "--help"])
    _setup_logging(args.log_level or "info")
    try:
        if args.command == "config":
            return _config_check(args.files)
        if args.command == "replay":
            return _replay(args)
        if args.command == "demo":
            if args.offline:
                from agent.demo import run_demo

                return run_demo(args.config, args.points, args.seed, Path(args.out))
            from agent.live_demo import run_live_demo

            return run_live_demo(args.config, args.points, args.seed, Path(args.out), args.rate)
        if args.command == "run":
            from agent.runtime import run_agent

            return run_agent(args.config, args.input)
    except (ConfigError, InputError, ModelLoadError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except AgentError as exc:
        log.error("%s", exc)
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130
    return EXIT_USAGE  # pragma: no cover


def _config_check(files: Sequence[str]) -> int:
    from agent.config import load_config

    for f in files:
        cfg = load_config(f)
        print(f"{f}: ok ({len(cfg.streams)} streams, config version {cfg.version})")
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from agent.config import load_config
    from agent.csvio import read_table
    from agent.onnx_scorer import model_from_config
    from agent.replay import input_files, output_for, replay_table, write_scores
    from agent.sinks import AlertSink, JsonlSink

    if args.warmup_rows < 0:
        raise InputError("--warmup-rows must be >= 0")
    cfg = load_config(args.config)
    if args.log_level is None:
        logging.getLogger().setLevel(cfg.agent.log_level.upper())
    if args.kind == "logs":
        from agent.logs.replay import replay_logs_cli

        return replay_logs_cli(cfg, args.input, args.scores, args.alerts, args.stream,
                               args.warmup_rows)
    if args.kind == "events":
        from agent.events.replay import replay_cli

        return replay_cli(cfg, args.input, args.scores, args.alerts)
    model = model_from_config(cfg.detectors.onnx, lambda s: cfg.resolve_path(s))
    if model is not None:
        log.info("stage 3: %s %s on %s", model.meta.name, model.meta.version, model.provider)
    in_root, out_root = Path(args.input), Path(args.scores)
    files = input_files(in_root)
    if in_root.is_dir() and out_root.exists() and not out_root.is_dir():
        raise InputError(f"--scores {out_root}: must be a directory when --input is one")
    tables = []
    total_rows = 0
    for f in files:
        t = read_table(f)
        tables.append(t)
        total_rows += len(t.ts)
    sinks: list[AlertSink] = [JsonlSink(args.alerts)] if args.alerts else []
    bar = tqdm(total=total_rows, unit="pt", file=sys.stderr, disable=args.no_progress,
               desc="replay", dynamic_ncols=True)
    totals = {"points": 0, "rejected": 0, "stage1": 0, "stage2": 0, "stage3": 0, "alerts": 0}
    seconds = 0.0
    try:
        for f, table in zip(files, tables, strict=True):
            res = replay_table(cfg, table, model=model, stream_id=args.stream,
                               warmup_rows=args.warmup_rows, sinks=sinks, progress=bar.update)
            write_scores(output_for(in_root, out_root, f), table, res)
            totals["points"] += res.points
            totals["rejected"] += res.rejected
            for k in ("stage1", "stage2", "stage3"):
                totals[k] += res.scored[k]
            totals["alerts"] += res.alerts_raised
            seconds += res.seconds
    finally:
        bar.close()
        for s in sinks:
            s.close()
    scored = max(totals["stage1"] or totals["stage2"] or totals["stage3"], 1)
    summary = {
        "files": len(files),
        **totals,
        "escalation_stage2": round(totals["stage2"] / scored, 4),
        "escalation_stage3": round(totals["stage3"] / scored, 4),
        "points_per_s": round(totals["points"] / seconds, 1) if seconds else None,
    }
    print(json.dumps({"summary": summary}), file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
