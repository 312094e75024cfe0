"""The C-FIND query side of the matcher: a query identifier becomes SQL.

``model`` is the parsed query (plain data), ``attributes`` the worklist attributes
a key may name, ``keys`` parses an identifier, ``values`` decodes query values and
DA/TM ranges, ``sql`` builds the conditions and the SELECT.
"""

from mwl_service.query.errors import (
    STATUS_IDENTIFIER_DOES_NOT_MATCH,
    STATUS_UNABLE_TO_PROCESS,
    QueryError,
)
from mwl_service.query.keys import ACTIVE_STATUSES, parse_query
from mwl_service.query.model import ReturnKey, WorklistQuery
from mwl_service.query.sql import build_select

__all__ = [
    "ACTIVE_STATUSES",
    "STATUS_IDENTIFIER_DOES_NOT_MATCH",
    "STATUS_UNABLE_TO_PROCESS",
    "QueryError",
    "ReturnKey",
    "WorklistQuery",
    "build_select",
    "parse_query",
]
