"""evaluate stage (see ARCHITECTURE.md)."""
