"""The vocabulary every layer shares: pure rules and values, no driver, framework or I/O.

Exact quantities, the calendar, times and ids, the error family, the domain
values, the meter and filter rules, the status machine, the Redis key layout.
"""
