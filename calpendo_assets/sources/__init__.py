"""Source plugins: each source type fetches a window of bookings as plain records.

`base` is the seam every plugin implements (`SourcePlugin`, `FetchResult`);
`registry` maps a config's ``type`` to its plugin. Plugins stand on
`calpendo_assets.core` only: the config loader and the sync import them, never the
other way round.
"""
