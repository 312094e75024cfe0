"""The mwl-api application: `create_app(db_url)` wires the routes, errors and middleware.

It opens the worklist database at creation, exactly as mwl-service does: an empty one
gets its tables at the newest revision, one at an older revision is refused with
`mwl_service.migrate.SchemaOutOfDateError` (naming ``calpendo-mwl db upgrade``).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine

from mwl_service.api import auth, errors, manual_routes, page, status, worklist
from mwl_service.api.middleware import AccessLog, BodyLimit, silence_uvicorn_access_log
from mwl_service.api.settings import ApiSettings
from mwl_service.engine import make_engine

DESCRIPTION = """\
The worklist's HTTP face. Every `/api/v1` endpoint except `health` and `login` needs
`Authorization: Bearer TOKEN` from `POST /api/v1/login`. Items carry the worklist columns
by their schema names; `Accept: application/dicom+json` gives the DICOM JSON model.
Manual items (source `manual`) are added, changed and cancelled here; items of a sync
source are read-only (409 naming the source). Nothing is deleted.
"""


def create_app(
    db_url: str | None = None, settings: ApiSettings | None = None, *, engine: Engine | None = None
) -> FastAPI:
    """The ASGI app over the worklist database at `db_url` (default ``$WORKLIST_DB_URL``).

    `settings` default: UTC as the site zone and the documented limits (`mwl-api`
    passes the zone it was given or read from the data-source config)."""
    settings = settings or ApiSettings()
    engine = engine or make_engine(db_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        engine.dispose()

    # FastAPIOffline: /docs with Swagger UI served by this process (FastAPI's own page
    # loads it from a CDN, which a closed scanner network cannot reach).
    app = FastAPIOffline(
        title="calpendo-mwl worklist API", description=DESCRIPTION, version="1",
        docs_url="/docs", redoc_url=None, lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    errors.install(app)
    for module in (auth, worklist, manual_routes, status, page):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).with_name("static")), name="static")
    # Added innermost first: AccessLog sees every answer, 413s and CORS preflights too.
    app.add_middleware(BodyLimit, max_body=settings.max_body)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
        )
    app.add_middleware(AccessLog)
    silence_uvicorn_access_log()
    return app
