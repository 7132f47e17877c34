"""Message templates: sandboxed compilation and per-recipient rendering."""
