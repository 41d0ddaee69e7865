"""Compatibility path: ``from blocks.transactions import transaction`` as Prefect's
``prefect.transactions``. The code lives in `blocks.runtime.engine._transactions`;
`blocks.runtime` is the public facade.
"""

from blocks.runtime.engine._transactions import (
    AsyncTransaction,
    CommitMode,
    IsolationLevel,
    Transaction,
    TransactionState,
    atransaction,
    get_transaction,
    transaction,
)

__all__ = [
    "AsyncTransaction",
    "CommitMode",
    "IsolationLevel",
    "Transaction",
    "TransactionState",
    "atransaction",
    "get_transaction",
    "transaction",
]
