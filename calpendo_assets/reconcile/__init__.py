"""Reconciling a sync's rows with the worklist: `plan` (pure: what would change, as
typed entries) and `publish` (the one write transaction that applies an approved plan)."""
