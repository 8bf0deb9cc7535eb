"""meterd: an asynchronous usage-metering worker for entitlements."""

__version__ = "0.1.0"
