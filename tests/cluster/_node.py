"""What one simulated node does, for the cluster tests (see ``_sim.py``).

    python tests/cluster/_node.py COMMAND ARGS...

Commands print ``TAG {json}`` lines on stdout; logs (WARNING and up) go to stderr.

``hold TARGET``           take ``exclusive(TARGET)``, print ``HELD``, wait for stdin to close
``take TARGET``           try ``exclusive(TARGET)`` (``--timeout``, ``--gone``, ``--lease``);
                          print ``RESULT {"ok": ..., "error": ...}``
``identity``              print ``IDENTITY`` with this process's identity
``cli ARGS...``           run ``h5guard ARGS...`` (merge, status, check): its exit code and output
``write DIR N``           a ShardWriter adds N results (``--commit-every``), printing ``ADDED
                          key`` after each returned add(); then waits for a stdin line per
                          further result ("add" adds one more, "close" closes, EOF leaves
                          the writer unclosed and exits)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from h5guard import _liveness, _lock


def emit(tag: str, value: object) -> None:
    print(f"{tag} {json.dumps(value)}", flush=True)


def payload(i: int) -> tuple[dict[str, object], dict[str, object]]:
    return {"v": np.arange(i + 3, dtype=np.float64)}, {"i": i}


def key_of(i: int) -> str:
    return f"k{i:03d}"


def cmd_hold(args: argparse.Namespace) -> int:
    with _lock.exclusive(
        args.target, timeout=args.timeout, purpose="test holder", lease=args.lease
    ):
        emit("HELD", _liveness.current().to_json())
        sys.stdin.read()
    emit("RELEASED", {})
    return 0


def cmd_take(args: argparse.Namespace) -> int:
    try:
        with _lock.exclusive(
            args.target,
            timeout=args.timeout,
            purpose="test taker",
            gone=args.gone,
            lease=args.lease,
        ):
            emit("RESULT", {"ok": True})
    except Exception as err:
        emit("RESULT", {"ok": False, "error": f"{type(err).__name__}: {err}"})
    return 0


def cmd_identity(args: argparse.Namespace) -> int:
    emit("IDENTITY", _liveness.current().to_json())
    return 0


def cmd_write(args: argparse.Namespace) -> int:
    from h5guard import ShardWriter

    writer = ShardWriter(args.dir, commit_every=args.commit_every, prefix=args.prefix)
    n = 0

    def add_one() -> None:
        nonlocal n
        key = f"{args.prefix}{key_of(args.first + n)}"
        writer.add(key, *payload(args.first + n))
        n += 1
        emit("ADDED", key)

    for _ in range(args.n):
        add_one()
    emit("WAITING", _liveness.current().to_json())
    for line in sys.stdin:
        word = line.strip()
        if word == "add":
            add_one()
        elif word == "close":
            writer.close()
            emit("CLOSED", n)
    return 0


def main() -> int:
    if sys.argv[1:2] == ["cli"]:
        from h5guard.cli import main as cli_main

        return cli_main(sys.argv[2:])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("hold", "take"):
        p = sub.add_parser(name)
        p.add_argument("target")
        p.add_argument("--timeout", type=float, default=30.0)
        p.add_argument("--lease", type=float, default=None)
        p.add_argument("--gone", nargs="*", default=[])
    sub.add_parser("identity")
    w = sub.add_parser("write")
    w.add_argument("dir")
    w.add_argument("n", type=int)
    w.add_argument("--commit-every", type=int, default=100)
    w.add_argument("--prefix", default="a")
    w.add_argument("--first", type=int, default=0)
    args = parser.parse_args()
    handler = {"hold": cmd_hold, "take": cmd_take, "identity": cmd_identity, "write": cmd_write}
    return handler[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
