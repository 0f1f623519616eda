"""Wiring: settings -> project -> engine -> source layer -> a started service.

The one place that picks adapters by ``type:``; everything else receives what it needs.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from decisionloop.engine.engine import compile_project
from decisionloop.engine.service import DecisionService
from decisionloop.settings import DuckDBSourceConfig, Settings
from decisionloop.storage.duckdb_source import DuckDBSourceLog
from decisionloop.storage.memory import MemorySourceLog
from decisionloop.storage.ports import SourceLog


def open_source(settings: Settings) -> SourceLog:
    if isinstance(settings.source, DuckDBSourceConfig):
        path = settings.source_path()
        assert path is not None
        return DuckDBSourceLog(path, max_group=settings.source.max_group)
    return MemorySourceLog()


def open_service(
    settings: Settings, progress: Callable[[int], None] | None = None
) -> DecisionService:
    """Load and compile the project, open the source layer, rebuild online state."""
    _, engine = compile_project(settings.project_dir)
    service = DecisionService(engine, open_source(settings), recent=settings.recent_decisions)
    try:
        service.start(progress)
    except BaseException:
        service.close()
        raise
    return service


def settle_heap() -> None:
    """Keep the cyclic garbage collector off the event loop's critical path before serving.

    Two measured pauses (``/v1/decide`` and batch load generators): a full collection walks the
    ~100,000 objects of the imported libraries (50-90 ms), and, as online feature state grows,
    every object it holds (110 ms at 60,000 events; it grows with the state). Objects alive now
    are frozen out of collection, and automatic full collections are turned off; the young
    generations are still collected as usual. In those runs every full collection found 0
    garbage objects: the service's objects die by reference counting. The
    ``python_gc_objects_collected_total`` series on ``/metrics`` shows whether that holds.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)


NEVER = 2**31 - 1  # a generation count that is never reached
