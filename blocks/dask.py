"""Compatibility path: ``from blocks.dask import ...`` keeps working.

As Prefect's ``prefect_dask``. The code lives in `blocks.runtime.runners._dask`; `blocks.runtime` is
the public facade.
"""

from blocks.runtime.runners._dask import DaskTaskRunner, RemoteTaskError

__all__ = ["DaskTaskRunner", "RemoteTaskError"]
