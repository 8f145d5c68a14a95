"""A private Mosquitto for the tests: a free loopback port, persistence and log in its own directory."""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from pathlib import Path

from tests.server import free_port


class Mosquitto:
    """``mosquitto -c <tmp>/mosquitto.conf`` with ``conf`` lines added to the listener, user and
    persistence settings every test broker has; it accepts connections when this returns."""

    def __init__(self, tmp: Path, *conf: str) -> None:
        self.dir = tmp
        self.port = free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        lines = (
            f"listener {self.port} 127.0.0.1",
            f"user {getpass.getuser()}",  # as root, Mosquitto would switch to its own user
            *conf,
            "persistence true",
            f"persistence_location {tmp}/",
            f"log_dest file {tmp}/mosquitto.log",
        )
        path = tmp / "mosquitto.conf"
        path.write_text("".join(f"{line}\n" for line in lines))
        self.proc = subprocess.Popen(["mosquitto", "-c", str(path)], stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mosquitto did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
