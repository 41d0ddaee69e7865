"""Compatibility path: ``from blocks.transactions import transaction`` as Prefect's
``prefect.transactions``. The code lives in `blocks.runtime.engine._transactions`;
`blocks.runtime` is the public facade.
"""

from blocks.runtime.engine._transactions import (
    CommitMode,
    IsolationLevel,
    Transaction,
    TransactionState,
    get_transaction,
    transaction,
)

__all__ = [
    "CommitMode",
    "IsolationLevel",
    "Transaction",
    "TransactionState",
    "get_transaction",
    "transaction",
]
