"""A launch profile as a backend: start() launches the server on a background thread (with
LoadProgress events and, on failure, one EngineErrorEvent carrying the log's tail), then connects
as RemoteBackend does; shutdown() also stops the server. A GUI can make a Compare column of it
without blocking, and race two flag sets of one server."""

from __future__ import annotations

import queue
from dataclasses import replace

from engine import events as ev
from engine.events import EngineState
from engine.remote.backend import RemoteBackend
from engine.remote.launch import LaunchedServer, LaunchError, LaunchProfile, free_port


class ProfileBackend(RemoteBackend):
    def __init__(self, profile: LaunchProfile, *, variables: dict[str, str] | None = None,
                 event_queue: queue.Queue | None = None, log_path=None, metrics_interval_s: float = 0.5) -> None:
        if profile.port is None:
            profile = replace(profile, port=free_port(profile.host))
        self.server = LaunchedServer(profile, variables=dict(variables or {}), log_path=log_path)
        self.server.port = profile.port
        super().__init__(self.server.remote_spec(metrics_interval_s=metrics_interval_s), event_queue=event_queue)
        self.profile = profile
        self.connect_wait_s = profile.start_timeout_s + 3 * self.spec.connect_timeout_s  # requests wait for start-up

    @property
    def config_label(self) -> str:
        return f"profile {self.profile.name} · {self.engine_kind.value} · {self.model or '?'}"

    def _connect(self, scrape: bool = True) -> None:
        if self.server.process is None:
            self.events.put(ev.StateChanged(EngineState.LOADING, detail=f"starting {self.profile.name}"))
            self.events.put(ev.LoadProgress(what="server", fraction=0.0,
                                            message=f"starting {self.profile.name}: {' '.join(self.server.command())}"))
            try:
                self.server.start()
                self.server.wait_healthy()
            except LaunchError as exc:
                self.server.stop()
                if not self._stop.is_set():  # not a shutdown during start-up
                    self.events.put(ev.EngineErrorEvent(message=str(exc), where="load"))
                self.events.put(ev.StateChanged(EngineState.IDLE))
                self._connected.set()
                return
            self.events.put(ev.LoadProgress(what="server", fraction=1.0,
                                            message=f"{self.profile.name} is up at {self.server.root_url}"))
        super()._connect(scrape)

    def shutdown(self, timeout: float = 2.0) -> bool:
        joined = super().shutdown(timeout)
        self.server.stop()
        return joined

    def log_tail(self, lines: int = 40) -> str:
        return self.server.log_tail(lines)
