"""The reference exchange engine: seeded price paths (pure) and the loop that publishes them."""
