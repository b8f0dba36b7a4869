"""report stage (see ARCHITECTURE.md)."""
