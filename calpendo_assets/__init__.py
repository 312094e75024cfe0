"""Dagster assets that turn Calpendo bookings into worklist rows."""
