"""User-facing tools built on the block and the integrations: compare, attention maps, block usage, demo."""
