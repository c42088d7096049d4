"""sessiond projections package."""
