"""sessiond actors package."""
