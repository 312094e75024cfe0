"""The REDCap source's plain parts: the request (`request`), the HTTP transport
(`transport`) and the rows-to-visits merge (`visits`). The plugin that wires them into a
sync comes with the configuration layout (issue 13)."""
