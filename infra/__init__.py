"""sessiond infra package."""
