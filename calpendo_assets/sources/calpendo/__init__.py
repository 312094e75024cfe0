"""The Calpendo source: query grammar (`query`), biskit normalisation (`biskits`), the
HTTP client (`client`), its config model (`settings`) and the plugin (`plugin`)."""
