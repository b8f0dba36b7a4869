"""sample stage (see ARCHITECTURE.md)."""
