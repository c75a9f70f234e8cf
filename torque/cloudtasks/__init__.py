"""The Google Cloud Tasks (REST v2) front door (SPEC 10).

Code written for Cloud Tasks runs against torque with the official client
and only its endpoint changed.  The door is mounted on the node's HTTP API at
``/v2/projects/<p>/locations/<l>/queues…``; its tasks are ordinary torque
tasks (``door == "cloudtasks"``), so ``GET /queues``, the dashboard,
``/metrics``, dead letters and pause see them too.

- :mod:`~torque.cloudtasks.names`: resource names and how they map onto
  torque's queues and task names;
- :mod:`~torque.cloudtasks.wire`: timestamps, durations, enums;
- :mod:`~torque.cloudtasks.errors`: Google's JSON error shape;
- :mod:`~torque.cloudtasks.tasks`: a Cloud Tasks Task to a torque task and back;
- :mod:`~torque.cloudtasks.queues`: a Cloud Tasks Queue, kept as a door
  record beside torque's queue settings;
- :mod:`~torque.cloudtasks.book`: the door's queues and tasks over the store;
- :mod:`~torque.cloudtasks.query`: bodies, query parameters, page tokens;
- :mod:`~torque.cloudtasks.api`: the routes;
- :mod:`~torque.cloudtasks.profile`: the ``X-CloudTasks-*`` delivery headers.
"""

#: The door's name: :attr:`torque.task.Task.door` of the tasks it adds.
DOOR = "cloudtasks"
