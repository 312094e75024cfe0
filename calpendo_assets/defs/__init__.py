"""The Dagster wiring, and nothing else: resources, the per-source multi-asset and its
checks, the job, schedule and sensor of each source, and the retention job. Every
step calls the plain-Python sync (`calpendo_assets.sync`); the code location
(`calpendo_assets.definitions`) assembles these."""
