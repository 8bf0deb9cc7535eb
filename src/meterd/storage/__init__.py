"""Storage adapters: the Redis counter store (``counters``, ``lua/``), and one SQL
store per aggregate (organisations, features, entitlements, plans, transitions,
usage, resolution views, listings, dead letters, notifications, API keys)."""
