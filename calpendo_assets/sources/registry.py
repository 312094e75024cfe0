"""Source types by their config ``type``. A new type is one more entry here."""

from __future__ import annotations

from calpendo_assets.sources.base import SourcePlugin
from calpendo_assets.sources.calpendo.plugin import CalpendoPlugin
from calpendo_assets.sources.file import FilePlugin
from calpendo_assets.sources.redcap.plugin import RedcapPlugin

PLUGINS: dict[str, SourcePlugin] = {
    p.type: p for p in (CalpendoPlugin(), FilePlugin(), RedcapPlugin())
}


def plugin_for(type_name: str) -> SourcePlugin:
    try:
        return PLUGINS[type_name]
    except KeyError:
        raise KeyError(f"unknown source type {type_name!r} (known: {', '.join(PLUGINS)})") from None
