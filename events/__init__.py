"""sessiond events package."""
