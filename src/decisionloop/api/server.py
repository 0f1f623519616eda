"""Run the ASGI app with uvicorn in a background thread (the demo, tests and benchmarks)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from decisionloop.errors import ConfigError, Problem
from decisionloop.settings import KEEP_ALIVE_S


class BackgroundServer:
    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 8000,
        keep_alive_s: int = KEEP_ALIVE_S,
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            loop="uvloop",
            http="httptools",
            lifespan="on",
            timeout_keep_alive=keep_alive_s,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.url = f"http://{host}:{port}"

    def start(self, timeout: float = 15.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    "the service did not start",
                    [Problem(self.url, "port in use or startup failed")],
                )
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
