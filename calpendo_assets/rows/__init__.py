"""Records -> worklist rows: time parsing, person names, the row model and the mapping step."""
