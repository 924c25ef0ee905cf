"""``station fleet``: one window with every station a broker knows (``--broker URL``).

The stations publish on ``<root>/<plant>/<line>/<station>/{status,result,alarm}`` (their
``[mqtt]`` section); this command subscribes and shows them. The login options are the
``[mqtt]`` section's keys. A broker that cannot be reached is retried: one line here, and
the window says so, until it answers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", default="mqtt://127.0.0.1:1883", metavar="URL",
                        help="the broker: mqtt://host:port, or mqtts://host:port for TLS "
                             "(default: %(default)s)")
    parser.add_argument("--topic-root", default="station", metavar="ROOT",
                        help="the stations' topic_root (default: %(default)s)")
    parser.add_argument("--username", default=None, help="broker user name")
    parser.add_argument("--password-file", type=Path, default=None, metavar="FILE",
                        help="file whose first line is the broker password")
    parser.add_argument("--ca-file", type=Path, default=None, metavar="FILE",
                        help="CA certificate the broker's certificate is checked against (TLS)")
    parser.add_argument("--cert-file", type=Path, default=None, metavar="FILE",
                        help="client certificate (TLS with client certificates)")
    parser.add_argument("--key-file", type=Path, default=None, metavar="FILE",
                        help="the client certificate's private key")
    parser.add_argument("--seconds", type=float, default=None,
                        help="close after this many seconds (checks, screenshots)")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                        help="save the window as a PNG just before closing (with --seconds)")


def _problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, in one line (None: nothing)."""
    from station.plant.fleet_client import parse_broker_url

    try:
        parse_broker_url(args.broker)
    except ValueError as exc:
        return f"--broker: {exc}"
    if not args.topic_root.strip("/") or any(c in args.topic_root for c in "+#"):
        return f"--topic-root {args.topic_root!r}: expected a topic like 'station' (no + or #)"
    for flag in ("password_file", "ca_file", "cert_file", "key_file"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            return f"--{flag.replace('_', '-')} {path}: no such file"
    if args.key_file is not None and args.cert_file is None:
        return "--key-file needs --cert-file"
    if args.seconds is not None and args.seconds <= 0:
        return f"--seconds {args.seconds}: expected a positive number"
    return None


def _password(path: Path | None) -> str | None:
    if path is None:
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[0].strip() if lines else ""


def run(args: argparse.Namespace) -> int:
    problem = _problem(args)
    if problem is not None:
        print(f"station fleet: {problem}", file=sys.stderr)
        return 2
    from station.plant.fleet_client import BrokerOptions
    from station.ui.fleet import run_fleet

    try:
        password = _password(args.password_file)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"station fleet: --password-file {args.password_file}: cannot read: {exc}",
              file=sys.stderr)
        return 2
    options = BrokerOptions(
        url=args.broker, username=args.username, password=password,
        ca_file=None if args.ca_file is None else str(args.ca_file),
        cert_file=None if args.cert_file is None else str(args.cert_file),
        key_file=None if args.key_file is None else str(args.key_file))
    return run_fleet(options, args.topic_root.strip("/"), seconds=args.seconds,
                     screenshot=args.screenshot, on_broker=_say)


def _say(state) -> None:  # noqa: ANN001 (a BrokerState; printed from paho's thread)
    print(f"station fleet: {state.text}", file=sys.stderr, flush=True)
