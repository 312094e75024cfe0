"""mwl-api: the worklist's HTTP face (REST API, page, health), a third process beside
mwl-service and Dagster that shares only the worklist database."""

from mwl_service.api.app import create_app

__all__ = ["create_app"]
