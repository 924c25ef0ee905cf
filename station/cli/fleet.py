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
from typing import Any

from station.cli.numbers import amount


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
    parser.add_argument("--seconds", type=amount(above=0), default=None,
                        help="close after this many seconds (checks, screenshots)")
    parser.add_argument("--screenshot", type=Path, default=None, metavar="PNG",
                        help="save the window as a PNG just before closing (with --seconds)")


def _problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, in one line (None: nothing)."""
    from station.config import mqtt_url_problem
    from station.config.schema import topic_name_problem

    problem = mqtt_url_problem(args.broker)
    if problem:
        return f"--broker {args.broker}: expected {problem}"
    root = args.topic_root.strip("/")
    for level in root.split("/"):
        if not level or topic_name_problem(level):
            return f"--topic-root {args.topic_root}: expected topic levels without + or #"
    for flag in ("password_file", "ca_file", "cert_file", "key_file"):
        path = getattr(args, flag)
        if path is not None and not path.is_file():
            return f"--{flag.replace('_', '-')} {path}: no such file"
    tls = args.broker.startswith("mqtts://")
    if not tls and (args.ca_file or args.cert_file or args.key_file):
        return "--ca-file, --cert-file and --key-file need an mqtts:// broker (TLS)"
    if args.key_file is not None and args.cert_file is None:
        return "--key-file needs --cert-file (the key belongs to a client certificate)"
    if args.password_file is not None and not args.username:
        return "--password-file needs --username (a password belongs to a user)"
    return None


def run(args: argparse.Namespace) -> int:
    problem = _problem(args)
    if problem is not None:
        print(f"station fleet: {problem}", file=sys.stderr)
        return 2
    from station.config import MqttSection
    from station.plant.mqtt import MqttConfigError
    from station.ui.fleet import run_fleet

    def text(path: Path | None) -> str:
        return "" if path is None else str(path)

    options = MqttSection(
        enabled=True, url=args.broker, topic_root=args.topic_root.strip("/"),
        username=args.username or "", password_file=text(args.password_file),
        ca_file=text(args.ca_file), cert_file=text(args.cert_file), key_file=text(args.key_file))
    try:
        return run_fleet(options, seconds=args.seconds, screenshot=args.screenshot,
                         on_broker=_say)
    except MqttConfigError as exc:  # a password or TLS file that cannot be used
        print(f"station fleet: {exc}", file=sys.stderr)
        return 2


def _say(state: Any) -> None:
    """A change of the broker's state, one line (from paho's thread)."""
    print(f"station fleet: {state.text}", file=sys.stderr, flush=True)
