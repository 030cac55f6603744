"""``edge-export``: train, calibrate, verify, sign, push and inspect models for the agent.

Exit status: 0 ok, 1 a failed operation (bad data, failed verification, bad
signature), 2 usage or configuration errors (the message names file and key).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from agent._version import __version__
from export.errors import ExportError, TrainConfigError


def _cmd_train(args: argparse.Namespace) -> int:
    from export.train import train_run

    res = train_run(args.config, args.data, args.out, device=args.device,
                    progress=not args.quiet, fuse=not args.no_fuse)
    rep = res.report
    diff = rep["max_abs_diff"]
    print(f"wrote {res.run_dir}: {rep['architecture']} {rep['n_params']} params, "
          f"{rep['model_bytes']} bytes, threshold {res.meta.threshold:.6g}, "
          f"max |torch-onnx| {diff if diff is None else f'{diff:.3g}'}")
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from export.calibrate import calibrate_file

    threshold, table = calibrate_file(args.model, args.data, args.method, args.q,
                                      args.initial_q)
    print(f"threshold {threshold:.6g} ({args.method}, q={args.q:g})")
    for k in sorted(table):
        print(f"  {k:<20} {table[k]:.6g}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from export.verify import verify_file

    ckpt = args.torch_checkpoint
    sibling = Path(args.model).with_name("model.pt")
    if ckpt is None and sibling.exists() and not args.no_torch:
        ckpt = sibling
    res = verify_file(args.model, checkpoint=ckpt, data=args.data, atol=args.atol,
                      golden_count=args.golden)
    if res.max_abs_diff is not None:
        print(f"torch vs ONNX: max abs diff random {res.max_abs_diff_random:.3g}, "
              f"real {res.max_abs_diff_real}, atol {res.atol:g}: OK")
    else:
        print("torch vs ONNX: skipped (no checkpoint)")
    print(f"golden vectors: {res.golden_count} embedded, max rel err "
          f"{res.golden_max_rel_err:.3g}")
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    from export.signing import keygen

    priv, pub = keygen(args.out)
    print(f"private key {priv} (mode 0600)\npublic key  {pub}")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from export.signing import sign_model

    targets = [t for t in (args.targets or "").split(",") if t]
    print(f"wrote {sign_model(args.model, args.key, targets)}")
    return 0


def _cmd_check_signature(args: argparse.Namespace) -> int:
    from export.signing import manifest_path, verify_manifest

    manifest = Path(args.manifest) if args.manifest else manifest_path(args.model)
    m = verify_manifest(manifest.read_bytes(), Path(args.pub).read_bytes(),
                        Path(args.model).read_bytes())
    print(f"signature OK: {m['name']} {m['version']} sha256 {m['sha256'][:16]}...")
    return 0


def _cmd_push(args: argparse.Namespace) -> int:
    from export.push import push

    tls = ({"ca_file": args.ca_file, "cert_file": args.cert_file, "key_file": args.key_file,
            "verify": not args.insecure} if args.tls else None)
    res = push(args.model, manifest=args.manifest, host=args.broker, port=args.port,
               root=args.gateway_topic, chunk_size=args.chunk_size, qos=args.qos,
               from_chunk=args.from_chunk, resume=args.resume, inflight=args.inflight,
               wait_s=args.wait, timeout=args.timeout, tls=tls, username=args.username,
               password=args.password, unsigned=args.unsigned,
               log=lambda s: print(s, file=sys.stderr))
    state = res.state or {}
    print(f"sent {res.sent}/{res.chunks} chunks; model/state: {state.get('state', 'n/a')}"
          + (f" ({state['reason']}: {state.get('detail')})" if state.get("reason") else ""))
    return 1 if state.get("state") == "failed" else 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from export.inspect_model import describe

    print(describe(args.model, as_json=args.json))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-export", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edge-export {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train on normal data and write a run directory")
    t.add_argument("--config", required=True, help="configs/train/<name>.yaml")
    t.add_argument("--data", required=True, help="CSV file or directory of CSV files")
    t.add_argument("--out", required=True, help="run directory to create")
    t.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--no-fuse", action="store_true",
                   help="ship the bare reconstruction graph (output: reconstruction) instead "
                   "of the fused one (scaling and error reduction in the graph)")
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("calibrate", help="set thresholds from held-out normal data")
    c.add_argument("model")
    c.add_argument("--data", required=True)
    c.add_argument("--method", choices=("quantile", "pot"), default="quantile")
    c.add_argument("--q", type=float, default=0.995, help="target quantile (default 0.995)")
    c.add_argument("--initial-q", type=float, default=0.98, help="POT initial quantile")
    c.set_defaults(func=_cmd_calibrate)

    v = sub.add_parser("verify", help="compare with PyTorch and embed golden vectors")
    v.add_argument("model")
    v.add_argument("--torch-checkpoint", help="model.pt (default: model.pt next to MODEL)")
    v.add_argument("--no-torch", action="store_true", help="skip the torch comparison")
    v.add_argument("--data", help="CSV to take golden windows from (default: existing ones)")
    v.add_argument("--atol", type=float, default=1e-4)
    v.add_argument("--golden", type=int, default=4, choices=range(3, 6), metavar="{3..5}")
    v.set_defaults(func=_cmd_verify)

    k = sub.add_parser("keygen", help="create an Ed25519 signing key pair")
    k.add_argument("--out", required=True)
    k.set_defaults(func=_cmd_keygen)

    s = sub.add_parser("sign", help="write MODEL.manifest.json signed with an Ed25519 key")
    s.add_argument("model")
    s.add_argument("--key", required=True, help="private key PEM")
    s.add_argument("--targets", help="comma-separated stream ids")
    s.set_defaults(func=_cmd_sign)

    cs = sub.add_parser("check-signature", help="verify MODEL against its signed manifest")
    cs.add_argument("model")
    cs.add_argument("--pub", required=True, help="public key PEM")
    cs.add_argument("--manifest", help="default: MODEL.manifest.json")
    cs.set_defaults(func=_cmd_check_signature)

    pu = sub.add_parser("push", help="send a signed model to a gateway over MQTT (chunked)")
    pu.add_argument("model")
    pu.add_argument("--manifest", help="signed manifest (default: MODEL.manifest.json)")
    pu.add_argument("--unsigned", action="store_true",
                    help="no manifest: send an unsigned one (the gateway must allow it)")
    pu.add_argument("--broker", required=True, help="MQTT broker host")
    pu.add_argument("--port", type=int, default=1883)
    pu.add_argument("--gateway-topic", required=True,
                    help="the gateway's topic root, e.g. edge/v1/site1/gw1")
    pu.add_argument("--chunk-size", type=int, default=65536, help="bytes per chunk")
    pu.add_argument("--qos", type=int, choices=(0, 1), default=1)
    pu.add_argument("--inflight", type=int, default=16, help="chunks awaiting PUBACK")
    pu.add_argument("--from-chunk", type=int, default=0, help="resume: first chunk to send")
    pu.add_argument("--resume", action="store_true",
                    help="send only the chunks the gateway reports missing")
    pu.add_argument("--wait", type=float, default=120.0,
                    help="seconds to wait for active/failed on model/state (0 = do not)")
    pu.add_argument("--timeout", type=float, default=10.0, help="CONNACK/PUBACK timeout")
    pu.add_argument("--tls", action="store_true", help="connect with TLS")
    pu.add_argument("--ca-file")
    pu.add_argument("--cert-file")
    pu.add_argument("--key-file")
    pu.add_argument("--insecure", action="store_true", help="TLS without verification")
    pu.add_argument("--username")
    pu.add_argument("--password")
    pu.set_defaults(func=_cmd_push)

    i = sub.add_parser("inspect", help="print the embedded metadata")
    i.add_argument("model")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_cmd_inspect)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TrainConfigError as exc:
        print(f"edge-export: error: {exc}", file=sys.stderr)
        return 2
    except (ExportError, OSError, ValueError) as exc:
        print(f"edge-export: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
