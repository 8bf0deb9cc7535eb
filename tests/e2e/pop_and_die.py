"""Ask the broker for a message, then die before reading the reply (test_broker_transport).

python pop_and_die.py URL KEY_PREFIX QUEUE
"""

from __future__ import annotations

import os
import signal
import sys
import time

from kombu import Connection

import meterd.broker  # noqa: F401  (registers the meterd-redis transport)

url, prefix, queue = sys.argv[1:4]
connection = Connection(url, transport_options={"global_keyprefix": prefix})
channel = connection.channel()
channel.basic_consume(queue, False, lambda message: None, "pop-and-die")
# Register the channel with kombu's poller, as a worker's event loop does: this sends
# the pop command. The reply lands in our socket; we die without reading it.
connection.transport.cycle.add(channel)
connection.transport.cycle._register_BRPOP(channel)
time.sleep(0.5)
os.kill(os.getpid(), signal.SIGKILL)
