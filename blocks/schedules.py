"""Public path: ``from blocks.schedules import CronSchedule, Cron, ...``.

As Prefect's ``prefect.schedules`` and ``prefect.client.schemas.schedules``. The code lives in
`blocks.deployments`; see `blocks.deployments.schedules`.
"""

from blocks.deployments import schedules as _schedules
from blocks.deployments.schedules import *  # noqa: F403 (the same names, listed once there)

__all__ = list(_schedules.__all__)
