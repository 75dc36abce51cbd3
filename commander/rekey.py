"""Re-encrypting what is stored, column by column in batches, resumable after a crash.

Two purposes share the pass:
- `seal`: plaintext an older version left in the columns v18 began to encrypt, sealed once at
  upgrade (the Commander finishes it before it serves: `finish_sealing`);
- `rotate`: every encrypted value moved to the newest data key (`m3shd keys rotate`), after
  which the older keys are retired from the keyring.

Each batch and its progress row (RekeyProgress: the last id done) commit together in one write
transaction, so a crash loses nothing and the next run goes on from there. A rotation stays safe
under concurrent writes because the new key is in the keyring before the pass starts, and the pass
starts only after every worker has had time to notice (keyring.RELOAD): a value written from then
on is under the new key, one written before is visited by the pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import peewee as pw

from commander import keyring
from commander.models import MODELS, CipherTextField, RekeyProgress, SealedTextField

BATCH = 500
SEAL, ROTATE = "seal", "rotate"


def encrypted_columns() -> dict[str, tuple[type[pw.Model], pw.Field]]:
    """`table.column` → (model, field) for every column holding Fernet tokens."""
    return {f"{model._meta.table_name}.{field.column_name}": (model, field)
            for model in MODELS for field in model._meta.sorted_fields
            if isinstance(field, (SealedTextField, CipherTextField))}


def pending(purpose: str) -> list[RekeyProgress]:
    return list(RekeyProgress.select().where(RekeyProgress.purpose == purpose).order_by(RekeyProgress.column))


def run(cmdr, purpose: str, batch: int = BATCH, progress: Callable[[str, int, int], None] | None = None) -> int:
    """Go through the columns `purpose` has progress rows for; returns the values re-encrypted."""
    columns = encrypted_columns()
    changed = 0
    for row in pending(purpose):
        model, field = columns[row.column]
        total = model.select().where(field.is_null(False)).count()
        done = model.select().where(field.is_null(False) & (model._meta.primary_key <= row.after_id)).count()
        while True:
            with cmdr.writing(wake=False):
                count, moved = _one_batch(cmdr, purpose, row.column, model, field, batch)
            changed += moved
            done += count
            if progress:
                progress(row.column, min(done, total), total)
            if count < batch:
                break
    return changed


def _one_batch(cmdr, purpose: str, column: str, model, field, batch: int) -> tuple[int, int]:
    """One batch after the column's mark, and the mark moved past it (or the column's row deleted
    when nothing is left), in the caller's transaction. Values are read and written as stored: a
    SealedTextField's own conversion would decrypt them on the way in and encrypt them on the way out."""
    mark = RekeyProgress.get(RekeyProgress.column == column)
    key = model._meta.primary_key
    query = model.select(key, field).where((key > mark.after_id) & field.is_null(False)).order_by(key).limit(batch)
    rows = cmdr.db.execute_sql(*query.sql()).fetchall()
    if purpose == SEAL:
        changes = [(cmdr.box.encrypt(stored.encode()), row_id) for row_id, stored in rows]
    else:
        changes = [(new, row_id) for row_id, stored in rows if (new := cmdr.box.rotated(stored)) is not None]
    if changes:
        # One statement for the batch: SET's parameter comes before WHERE's, as peewee writes them.
        statement, _ = model.update({field: pw.Value("", converter=False)}).where(key == 0).sql()
        cmdr.db.cursor().executemany(statement, changes)
    moved = len(changes)
    if len(rows) < batch:
        mark.delete_instance()
    else:
        RekeyProgress.update(after_id=rows[-1][0]).where(RekeyProgress.column == column).execute()
    return len(rows), moved


def finish_sealing(cmdr) -> int:
    """Seal what an upgrade to v18 left in plaintext; nothing to do on every later start."""
    with cmdr.db.connection_context():
        return run(cmdr, SEAL) if pending(SEAL) else 0


def rotate(cmdr, batch: int = BATCH, progress: Callable[[str, int, int], None] | None = None,
           source: keyring.KekSource | None = None, settle: float = 2 * keyring.RELOAD) -> dict:
    """Add a data key (or resume the rotation under way), re-encrypt every value with it, then
    retire the older keys. `settle`: how long workers are given to load the new keyring."""
    data_dir = cmdr.settings.data_dir
    with cmdr.db.connection_context():
        keys = keyring.update(data_dir, keyring.add_data_key, source)
        if not pending(ROTATE):
            with cmdr.writing(wake=False):
                RekeyProgress.insert_many([{"column": name, "purpose": ROTATE, "after_id": 0}
                                           for name in encrypted_columns()]).on_conflict_ignore().execute()
        cmdr.box.reload()
        time.sleep(settle)
        moved = run(cmdr, ROTATE, batch, progress)
        keys = keyring.update(data_dir, keyring.retire, source)
        cmdr.box.reload()
    return {"reencrypted": moved, "data_keys": len(keys.data)}
