"""Storage adapters: the Redis counter store and the SQL repository."""
