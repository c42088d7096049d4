"""The admin console (issue 18): its REST adapter (`routes`) and its page (`ui/`, served as is)."""

__all__: list[str] = []
