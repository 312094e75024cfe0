"""The Calpendo source: query grammar and the window query (`query`), answers as records
(`biskits`), the HTTP transport (`http`), what one fetch requests (`fetch`), its config
model (`settings`) and the plugin (`plugin`)."""
