"""Compatibility path: ``from blocks.flows import ...`` keeps working.

As Prefect's ``prefect.flows``. The code lives in `blocks.runtime._flows`; `blocks.runtime` is the
public facade.
"""

from blocks.runtime._flows import Flow, ParameterTypeError, flow

__all__ = ["Flow", "ParameterTypeError", "flow"]
