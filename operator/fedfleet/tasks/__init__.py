"""What gets trained. A task builds the model, loads one site's data, trains and evaluates.

Users implement `fedfleet.tasks.base.Task` in their own module and name it in the manifest
(`spec.task.name: mypackage.mymodule:MyTask`); built-in tasks have short names.
"""

from fedfleet.tasks.base import (
    SiteContext,
    Task,
    TaskError,
    TrainContext,
    load_task,
    numpy_to_state,
    state_to_numpy,
)

__all__ = [
    "SiteContext",
    "Task",
    "TaskError",
    "TrainContext",
    "load_task",
    "numpy_to_state",
    "state_to_numpy",
]
