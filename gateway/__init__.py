"""sessiond gateway package."""
