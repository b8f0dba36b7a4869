"""encoders stage (see ARCHITECTURE.md)."""
