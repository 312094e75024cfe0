"""The ``redcap`` source type: scan visits of one REDCap project.

`request` (the window's export and its filterLogic), `transport` (the POST, REDCap's
error answers), `visits` (rows merged into visits, booking ids), `records` (visits as
the records the mapping reads), `settings` (the ``config`` model), `pylantir`
(Pylantir's keys and identifiers) and `plugin` (fetch, fingerprint, probe).
"""
