"""Pipeline steps the Commander carries out itself, with no model: notify steps.

A notify step is stored as a blocked task with a StepAction; when its parents are done,
pipelines.advance renders its message (`{{ steps.KEY.output }}`) and makes it due (inside the
write transaction, where nothing may wait on the network). This loop, in one worker at a time,
sends what is due outside any transaction, then finishes the step (succeeded, or failed after
MAX_ATTEMPTS tries with loops.retry_delay between them) and moves its pipeline on.
"""

from __future__ import annotations

import logging
import threading

from commander import pipelines, templates
from commander.models import BLOCKED, FAILED, SUCCEEDED, Pipeline, StepAction, Task, now
from commander.plugins.builtin import notify
from commander.schemas import Notification
from m3shd import loops

log = logging.getLogger("m3shd.commander.plugins")

MAX_ATTEMPTS = 3
RETRY_BASE, RETRY_CAP = 2.0, 30.0
MESSAGE_CHARS = 4000  # ntfy's default message limit is 4,096 bytes


def deliver_due(cmdr) -> int:
    due = list(StepAction.select().where((StepAction.state == "due") & (StepAction.next_at <= now()))
               .order_by(StepAction.id).limit(20))
    for action in due:
        if Task.get_by_id(action.task_id).state != BLOCKED:  # its pipeline ended (cancelled) meanwhile
            StepAction.update(state="done").where(StepAction.id == action.id).execute()
            continue
        message = templates.cut(cmdr.box.decrypt(action.message).decode(), MESSAGE_CHARS)
        note = Notification.model_validate({**action.spec, "message": message})
        error = notify.send(cmdr.settings, note)
        attempts = action.attempts + 1
        with cmdr.writing():
            if error and attempts < MAX_ATTEMPTS:
                StepAction.update(attempts=attempts, last_error=error,
                                  next_at=now() + loops.retry_delay(attempts - 1, RETRY_BASE, RETRY_CAP)).where(
                    StepAction.id == action.id).execute()
                continue
            StepAction.update(state="done", attempts=attempts, last_error=error).where(
                StepAction.id == action.id).execute()
            step = Task.get_by_id(action.task_id)
            pipeline = Pipeline.get_by_id(step.pipeline_id)
            if error:
                pipelines.move(cmdr, pipeline, step, FAILED, error=f"notify: {error}")
            else:
                pipelines.move(cmdr, pipeline, step, SUCCEEDED, output=f"sent to ntfy topic {note.topic}")
            pipelines.advance(cmdr, Task.get_by_id(step.id))
        if error:
            log.warning("notify step %d: attempt %d failed: %s", action.task_id, attempts, error)
    return len(due)


def start(cmdr, every: float = 0.5) -> None:
    threading.Thread(target=cmdr.run_alone, args=("notify-steps", lambda: deliver_due(cmdr), every, 60.0),
                     name="notify-steps", daemon=True).start()
