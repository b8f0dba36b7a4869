"""train stage (see ARCHITECTURE.md)."""
