"""Wiring: settings -> project -> engine -> source layer -> a started service.

The one place that picks adapters by ``type:``; everything else receives what it needs.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
from collections.abc import Callable
from datetime import timedelta

from decisionloop.cases.alerts import AlertHook
from decisionloop.cases.config import load_cases_config
from decisionloop.cases.schedule import MonitorSchedule
from decisionloop.cases.service import CaseService
from decisionloop.cases.store import SqlCaseStore
from decisionloop.engine.engine import DecisionEngine, compile_project
from decisionloop.engine.metrics import Counters
from decisionloop.engine.service import DecisionService
from decisionloop.ops.index import LookupIndex
from decisionloop.ops.store import OpsStore, SqlOpsStore
from decisionloop.rules.versions import ruleset_version
from decisionloop.settings import DuckDBSourceConfig, Settings
from decisionloop.storage.duckdb_source import DuckDBSourceLog
from decisionloop.storage.memory import MemorySourceLog
from decisionloop.storage.ports import SourceLog

log = logging.getLogger(__name__)


def open_source(settings: Settings) -> SourceLog:
    if isinstance(settings.source, DuckDBSourceConfig):
        path = settings.source_path()
        assert path is not None
        return DuckDBSourceLog(path, max_group=settings.source.max_group)
    return MemorySourceLog()


def open_ops_store(settings: Settings) -> OpsStore:
    """The labels and lists store: ``ops_store_url``, or a SQLite file in ``data_dir``."""
    if settings.ops_store_url is None:
        return SqlOpsStore.at_path(settings.data_dir / "ops.sqlite")
    return SqlOpsStore(settings.ops_store_url)


def open_cases(
    settings: Settings, engine: DecisionEngine, ops: OpsStore | None = None
) -> CaseService:
    """Alerts and cases: in the operational store's database (on its engine when given),
    configured by the project's ``cases.yaml``."""
    config = load_cases_config(settings.project_dir, engine.catalog.types)
    if isinstance(ops, SqlOpsStore):
        return CaseService(SqlCaseStore(ops.engine), config)
    if settings.ops_store_url is None:
        path = settings.data_dir / "ops.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return CaseService(SqlCaseStore(f"sqlite:///{path}"), config)
    return CaseService(SqlCaseStore(settings.ops_store_url), config)


def open_service(
    settings: Settings, progress: Callable[[int], None] | None = None
) -> DecisionService:
    """Load and compile the project, open the source layer, rebuild online state."""
    engine = compile_engine(settings)
    service = DecisionService(
        engine,
        open_source(settings),
        recent=settings.recent_decisions,
        max_future_skew=timedelta(seconds=settings.max_future_skew_s),
    )
    try:
        service.ops = open_ops_store(settings)
        engine.lookups.apply_labels(service.ops.labels())
        engine.lookups.apply_items(service.ops.items())
        cases = open_cases(settings, engine, service.ops)
        service.alerts = AlertHook(cases, service.metrics.registry)
        service.monitoring = monitor_schedule(settings, service.source, cases, service.ops)
        if service.monitoring is not None:
            service.metrics.registry.register(Counters([service.monitoring.runs]))
        service.start(progress)
    except BaseException:
        service.close()
        raise
    return service


def start_monitoring(service: DecisionService) -> None:
    """Start scheduled monitoring (``monitoring.every``): for a server, once it is up — not for
    commands that open the service to import or change data."""
    if service.monitoring is not None:
        service.monitoring.start()


def monitor_schedule(
    settings: Settings, source: SourceLog, cases: CaseService, ops: OpsStore | None
) -> MonitorSchedule | None:
    """Post-event monitoring in the service — on demand, and scheduled when ``cases.yaml``
    gives ``monitoring.every`` — when the source layer can be read in batch (DuckDB, the
    embedded default)."""
    every = cases.config.monitoring.period
    if not isinstance(source, DuckDBSourceLog):
        if every is not None:
            log.warning("monitoring.every is set, but the %s source cannot be monitored", source)
        return None
    return MonitorSchedule(
        settings.project_dir, source, cases, ops, every, cases.config.monitoring.delay
    )


def compile_engine(settings: Settings, lookups: LookupIndex | None = None) -> DecisionEngine:
    """Compile the project, each strategy's version naming the ruleset it runs: the published
    version (``transaction@v1+v3``) or, unpublished, the rules' content hash. A reload passes the
    running ``lookups``, so that the new rules read the labels and lists in force."""
    ruleset = ruleset_version(settings.project_dir, settings.data_dir)
    _, engine = compile_project(settings.project_dir, lookups)
    engine.strategies = {
        name: dataclasses.replace(s, version=f"{name}@v{s.spec.version}+{ruleset}")
        for name, s in engine.strategies.items()
    }
    return engine


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
    # Frozen objects outlive the interpreter's final collection; DuckDB's bindings (nanobind)
    # then report them as leaks on exit. Unfrozen at exit, they are freed as usual.
    atexit.register(gc.unfreeze)
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, NEVER)


NEVER = 2**31 - 1  # a generation count that is never reached
