"""How a run executes: the steps a run's state machine yields and the drivers that perform them
(`_steps`), and the task run (`_task_run`). Internal: users go through `blocks.runtime`."""
