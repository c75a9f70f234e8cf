"""The Upstash QStash v2 front door (SPEC §10): QStash's own clients publish
to a torque node by changing only their base URL.

* :mod:`torque.qstash.headers` turns a publish (destination, ``Upstash-*``
  headers, body) into an ordinary :class:`~torque.task.Task` (pure);
* :mod:`torque.qstash.signature` signs a delivery as QStash does (an HS256
  JWT), and :mod:`torque.qstash.profile` adds QStash's delivery headers;
* :mod:`torque.qstash.signing_keys` holds the node's signing keys (options,
  or generated once and shared through Redis);
* :mod:`torque.qstash.views` shapes tasks as QStash messages;
* :mod:`torque.qstash.routes` is the ``/v2/…`` Klein app;
* :mod:`torque.qstash.callbacks` publishes callback messages after attempts.

Messages are torque tasks whose :attr:`~torque.task.Task.door` is
:data:`DOOR`: the same queues, dashboard, metrics and dead letters.
"""

#: The door name a QStash message's task carries.
DOOR = "qstash"
