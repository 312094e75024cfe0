"""Data-source plugins: each source type fetches a window of bookings as plain records.

`registry` maps a config's ``type`` to its plugin; `base` is the seam every plugin
implements; `errors` is what a failed fetch raises.
"""
