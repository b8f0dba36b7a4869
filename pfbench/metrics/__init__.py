"""metrics stage (see ARCHITECTURE.md)."""
