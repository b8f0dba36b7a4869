"""suite stage (see ARCHITECTURE.md)."""
