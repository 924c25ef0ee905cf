"""A local Mosquitto broker on 127.0.0.1, for the tests and ``station bench``.

Started from a config file of its own (a free loopback port, anonymous clients, no
persistence), it can be killed (-9, as a crash) and started again on the *same* port, so a
station's reconnection and its buffered backlog can be checked against a real broker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"


def find_mosquitto() -> str | None:
    """The broker binary: Debian's ``/usr/sbin/mosquitto``, else ``mosquitto`` on PATH."""
    if os.access(MOSQUITTO, os.X_OK):
        return MOSQUITTO
    return shutil.which("mosquitto")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """``start()``, ``kill()`` (SIGKILL), ``stop()`` (SIGTERM), ``restart()`` on the same
    port; ``url`` is ``mqtt://127.0.0.1:<port>``. ``extra`` lines go into the config (a TLS
    listener, a ``password_file``); ``persistent`` keeps sessions across a restart;
    ``anonymous=False`` lets only known users in. Use it as a context manager, or ``stop()``."""

    def __init__(self, folder: str | Path, port: int | None = None, extra: str = "",
                 binary: str | None = None, persistent: bool = False,
                 anonymous: bool = True) -> None:
        found = binary or find_mosquitto()
        if found is None:
            raise FileNotFoundError("mosquitto is not installed (Debian: apt-get install "
                                    "mosquitto)")
        self.binary = found
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.config = self.folder / "mosquitto.conf"
        self.log = self.folder / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1",
                 f"allow_anonymous {'true' if anonymous else 'false'}",
                 "log_dest stderr", "log_type error", "log_type warning"]
        # persistent: sessions and subscriptions survive a restart (saved every second)
        lines += ([f"persistence true\npersistence_location {self.folder}/",
                   "autosave_interval 1"] if persistent else ["persistence false"])
        if os.geteuid() == 0:
            lines.append("user root")  # as root it would switch to a 'mosquitto' user
        self.config.write_text("\n".join(lines) + "\n" + extra + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15.0) -> Mosquitto:
        """Start the broker and wait until it accepts connections on its port."""
        if self.running:
            return self
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{self.port} within "
                           f"{timeout:.0f} s: {self.log.read_text(errors='replace')[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: the broker dies as in a crash (no persistence: its state is gone)."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        self._end(signal.SIGTERM)

    def _end(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10.0)

    def restart(self, timeout: float = 15.0) -> Mosquitto:
        """Kill (if running) and start again on the same port."""
        self.kill()
        return self.start(timeout)

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
