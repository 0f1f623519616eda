"""Operator endpoints: ``POST /v1/admin/reload`` applies the project folder's current rules.

No authentication, like the rest of the API for now: keep the service bound to a private address.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from decisionloop.engine.service import DecisionService
from decisionloop.runtime import compile_engine
from decisionloop.settings import Settings


def admin_router(service: DecisionService, settings: Settings) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["operations"])

    @router.post("/reload")
    async def reload() -> dict[str, Any]:
        """Compile the project folder again and swap in its rules between requests.

        Decisions already under way finish on the old rules; the next ones run on the new and
        record their version. An invalid project is refused (422, every problem listed) and a
        change to entities, event types or features needs a restart (409); either way the
        running rules keep serving.
        """
        lookups = service.engine.lookups  # the running labels and lists, taken on the loop
        return await service.reload(lambda: compile_engine(settings, lookups))

    return router
