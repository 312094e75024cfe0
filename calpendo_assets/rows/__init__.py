"""Records -> worklist rows (pure): times, names, the row model (columns + content hash),
scope, field values, the MR fields, codes, templates, the mapping step, and the row
checks the asset checks run. Stands on `calpendo_assets.core`; no plugin, no Dagster."""
