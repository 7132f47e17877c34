"""Send lanes: campaigns and one-to-one messages share the provider's rate."""
