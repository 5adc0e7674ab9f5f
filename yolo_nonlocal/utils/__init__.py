"""Small shared helpers with no framework imports at module level (one home for each concept)."""
