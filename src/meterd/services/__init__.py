"""Services: the logic of meterd, free of Celery, HTTP and CLI concerns."""
