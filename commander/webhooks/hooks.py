"""The hooks an operator configures: name, kind, the secret that authenticates deliveries
(sealed with the Commander's SecretBox, shown once), and the rules saying what events start."""

from __future__ import annotations

from commander import audit, pipelines
from commander.api.pipelines import step_of
from commander.context import Commander
from commander.exceptions import Conflict, NotFound
from commander.models import Webhook, now
from commander.schemas import HookIn, HookOut, PipelineStep
from commander.secrets import new_token


def url(hook: Webhook) -> str:
    return f"/api/webhooks/{hook.kind}/{hook.name}"


def out(hook: Webhook, secret: str | None = None) -> HookOut:
    return HookOut.from_row(hook, url=url(hook), secret=secret)


def get(name: str, kind: str | None = None) -> Webhook:
    """The hook called `name` (of `kind`, if given: a GitHub hook is not reached at the Uptime Kuma URL)."""
    hook = Webhook.get_or_none(Webhook.name == name)
    if hook is None or (kind is not None and hook.kind != kind):
        raise NotFound("no_webhook", f"there is no {kind + ' ' if kind else ''}webhook called {name!r}")
    return hook


def listing() -> list[Webhook]:
    return list(Webhook.select().order_by(Webhook.name))


def secret_of(cmdr: Commander, hook: Webhook) -> bytes:
    return cmdr.box.decrypt(hook.secret)


def check_rules(body: HookIn) -> None:
    """A pipeline rule's steps must form a graph pipelines would take; its `{{ event.… }}`
    placeholders are filled per delivery, so they are left as they are here."""
    for rule in body.rules:
        if rule.pipeline is not None:
            pipelines.dependency_order([step_of(PipelineStep.model_validate(step.model_dump()), None)
                                        for step in rule.pipeline.steps])


def create(cmdr: Commander, body: HookIn, actor: str) -> tuple[Webhook, str]:
    """Store a new hook; returns it and its secret, which is never shown again."""
    check_rules(body)
    secret = new_token("webhook")
    with cmdr.writing():
        if Webhook.select().where(Webhook.name == body.name).exists():
            raise Conflict("webhook_exists", f"a webhook called {body.name!r} exists already; pick another name "
                                             f"or delete it first")
        hook = Webhook.create(name=body.name, kind=body.kind, secret=cmdr.box.encrypt(secret.encode()),
                              rules=[rule.model_dump(exclude_none=True) for rule in body.rules],
                              debounce=body.debounce, created_by=actor)
        audit.record(actor, "webhook.created", f"webhook {hook.name}", kind=hook.kind)
    return hook, secret


def rotate(cmdr: Commander, name: str, actor: str) -> tuple[Webhook, str]:
    """A new secret for the hook; the old one stops working at once."""
    secret = new_token("webhook")
    with cmdr.writing():
        hook = get(name)
        Webhook.update(secret=cmdr.box.encrypt(secret.encode()), rotated_at=now()).where(Webhook.id == hook.id).execute()
        audit.record(actor, "webhook.secret_rotated", f"webhook {name}")
    return get(name), secret


def delete(cmdr: Commander, name: str, actor: str) -> None:
    """The hook and its deliveries; the tasks and pipelines it started stay."""
    with cmdr.writing():
        hook = get(name)
        hook.delete_instance(recursive=True)
        audit.record(actor, "webhook.deleted", f"webhook {name}")
