"""Bookings of every data source (Calpendo, a file, ...) synced into the DICOM worklist.

Layers, each importing only those below it: `core` (plain vocabulary), `sources`
(the plugins) and `rows` (the mapping step), `config` (the config file), `reconcile`
and `sync` (plain Python), `defs` and `definitions` (Dagster).
"""
