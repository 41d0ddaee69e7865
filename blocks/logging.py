"""Compatibility path: ``from blocks.logging import ...`` keeps working.

As Prefect's ``prefect.logging``. The code lives in `blocks.runtime._logging`; `blocks.runtime` is
the public facade.
"""

from blocks.runtime._logging import get_run_logger, install_print_capture, log_failure, run_logger

__all__ = ["get_run_logger", "install_print_capture", "log_failure", "run_logger"]
