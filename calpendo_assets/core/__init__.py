"""The floor: plain vocabulary every other layer of calpendo_assets stands on.

Records and their dotted paths, the value types and shared settings of a source's
``config``, the errors, credentials, the sync window and the loaded `DataSource`.
Nothing here imports a module of calpendo_assets outside `core` (docs/architecture.md,
"Layers"): plugins, rows, the config loader and the Dagster wiring import it, never
the other way round.
"""
