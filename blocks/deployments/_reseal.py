"""Re-sealing the run store's rows when the master key rotates (`block key rotate`).

Deployments and the parameters of every run not yet ended are sealed with the master key; the
rotation retires the old key, so they are re-sealed under the new one in the rotation's own
transaction (the hook below, registered with core's rotation). A row whose old seal does not
verify (edited in the database) is left as it is: re-sealing it would bless the edit, and it
stays refused. Finished runs keep their seal (history: nothing runs them again).
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from blocks.core._encryption import Keyset
from blocks.core._rotation import register_resealer
from blocks.deployments import _tables as t
from blocks.deployments._records import deployment_message, run_message
from blocks.deployments._states import FINAL
from blocks.errors import BlocksError

#: The name the rotation imports this hook by (recorded in ``registry_meta``).
MODULE = __name__


def reseal_run_store(conn: Connection, keys: Keyset) -> int:
    """Re-seal every deployment and every run not ended under `keys`' active key; return how
    many rows were re-sealed."""
    if not sa.inspect(conn).has_table(t.flow_runs.name):
        return 0
    resealed = 0
    refused: list[str] = []
    for row in conn.execute(sa.select(t.deployments)).all():
        message = deployment_message(
            row.id, row.flow_name, row.name, row.version, row.pool_name, row.document
        )
        what = f"Deployment {row.flow_name}/{row.name}"
        if _still_genuine(keys, message, row.seal, what, refused):
            conn.execute(
                t.deployments.update()
                .where(t.deployments.c.id == row.id, t.deployments.c.seal == row.seal)
                .values(seal=keys.seal(message))
            )
            resealed += 1
    waiting = sa.select(
        t.flow_runs.c.id, t.flow_runs.c.deployment_id, t.flow_runs.c.parameters, t.flow_runs.c.seal
    ).where(t.flow_runs.c.state.not_in([state.value for state in FINAL]))
    for row in conn.execute(waiting).all():
        message = run_message(row.id, row.deployment_id, row.parameters)
        if _still_genuine(keys, message, row.seal, f"Flow run {row.id}", refused):
            conn.execute(
                t.flow_runs.update()
                .where(t.flow_runs.c.id == row.id)
                .values(seal=keys.seal(message))
            )
            resealed += 1
    if refused:
        warnings.warn(
            f"Key rotation left {len(refused)} run-store row(s) that do not verify as they were "
            f"(they stay refused): {', '.join(refused[:10])}",
            stacklevel=2,
        )
    return resealed


def _still_genuine(keys: Keyset, message: bytes, seal: str, what: str, refused: list[str]) -> bool:
    try:
        keys.verify(message, seal, what=what)
    except BlocksError:
        refused.append(what)
        return False
    return True


register_resealer(MODULE, reseal_run_store)
