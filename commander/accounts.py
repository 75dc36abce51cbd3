"""Operator accounts: users, logins with throttling, and browser sessions."""

from __future__ import annotations

import hmac
import re
import secrets

from commander import audit, passwords
from commander.context import Commander
from commander.exceptions import Conflict, Invalid, NotFound, TooManyRequests, Unauthenticated
from commander.models import LoginFailure, Session, User, now
from commander.permissions import FULL_ROLES, ROLES, check_held
from commander.secrets import token_hash

USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
THROTTLE_WINDOW_S = 900
ACCOUNT_FAILURES = 5     # per account per window: slows guessing one password
ADDRESS_FAILURES = 20    # per address per window: slows spraying many accounts


def offload(cmdr: Commander, fn, *args):
    """Run CPU-bound work (PBKDF2) on a real thread under gevent, so one login does not
    stall every long-poll of this worker for a fifth of a second. The request's database
    connection goes back to the pool first: logins queue for the worker's few threads, and
    each holding a pooled connection meanwhile would let a crowd of logins empty the pool.
    It yields: never call it inside a write transaction (peewee refuses to close one), where
    another greenlet would then block the whole worker in SQLite's busy wait on the lock."""
    cmdr.db.close()
    try:
        from gevent import get_hub, monkey
    except ImportError:
        return fn(*args)
    if monkey.is_module_patched("threading"):
        return get_hub().threadpool.apply(fn, args)
    return fn(*args)


def _check_new(username: str | None, password: str | None, role: str | None) -> None:
    if username is not None and not USERNAME.match(username):
        raise Invalid("invalid_request", "a user name is 1-64 letters, digits or _ . @ -")
    if password is not None and (problem := passwords.problem(password)):
        raise Invalid("invalid_request", problem)
    if role is not None and role not in ROLES:
        raise Invalid("invalid_request", f"role must be one of: {', '.join(ROLES)}")


def create_user(cmdr: Commander, username: str, password: str, role: str, actor: str,
                creator: frozenset[str] | None = None) -> User:
    """A new account with `role`, whose permissions `creator` (the caller's; None: this machine's
    operator at the command line) must all hold."""
    _check_new(username, password, role)
    check_held(creator, ROLES[role], f"create a user with the {role} role")
    password_hash = offload(cmdr, passwords.hash_password, password)  # before the transaction: see offload
    with cmdr.writing():
        if User.get_or_none(User.username == username):
            raise Conflict("exists", f"user {username} already exists")
        user = User.create(username=username, password_hash=password_hash, role=role)
        audit.record(actor, "user.created", username, role=role)
    return user


def update_user(cmdr: Commander, user_id: int, actor: str, role: str | None = None, disabled: bool | None = None,
                password: str | None = None, changer: frozenset[str] | None = None) -> User:
    """Change role, disable/enable, or reset the password; every change is audited. `changer`,
    the caller's permissions (None: this machine's operator at the command line), must hold all
    the user's, and a new role's too: nobody takes over, or hands out, more than they hold. The
    last enabled user holding every permission stays enabled and keeps its role."""
    _check_new(None, password, role)
    password_hash = offload(cmdr, passwords.hash_password, password) if password is not None else None
    with cmdr.writing():
        user = User.get_or_none(User.id == user_id)
        if user is None:
            raise NotFound("not_found", f"user {user_id} does not exist")
        check_held(changer, ROLES[user.role], f"change user {user.username} ({user.role})")
        changes: dict = {}
        if role is not None and role != user.role:
            check_held(changer, ROLES[role], f"give the {role} role")
            changes["role"] = role
            audit.record(actor, "user.role", user.username, previous=user.role, role=role)
        if disabled is not None and disabled != (user.disabled_at is not None):
            changes["disabled_at"] = now() if disabled else None
            audit.record(actor, "user.disabled" if disabled else "user.enabled", user.username)
        if password_hash is not None:
            changes["password_hash"] = password_hash
            audit.record(actor, "user.password_reset", user.username)
        if user.role in FULL_ROLES and user.disabled_at is None and (
                changes.get("role", user.role) not in FULL_ROLES or changes.get("disabled_at")):
            _keep_an_admin(user)
        if changes:
            User.update(**changes).where(User.id == user.id).execute()
            if "password_hash" in changes or changes.get("disabled_at"):
                Session.delete().where(Session.user == user.id).execute()  # sign it out everywhere
    return User.get_by_id(user_id)


def _keep_an_admin(leaving: User) -> None:
    """Refuse to disable or demote `leaving` when no other enabled user holds every permission:
    nobody could then manage users again from the API or the dashboard."""
    others = User.select().where(User.role.in_(FULL_ROLES) & User.disabled_at.is_null() & (User.id != leaving.id))
    if not others.exists():
        raise Conflict("last_admin", f"{leaving.username} is the last enabled admin (a user holding every "
                                     f"permission): make another user admin first")


def _recent_failures(key: str, since: float) -> list[float]:
    return [row.ts for row in LoginFailure.select(LoginFailure.ts).where(
        (LoginFailure.key == key) & (LoginFailure.ts > since)).order_by(LoginFailure.ts)]


def _count_attempt(cmdr: Commander, keys_and_limits: list[tuple[str, int]]) -> list[int]:
    """Count a login attempt against each key, before its password is checked: refused
    (TooManyRequests) if a key has reached its limit, else recorded as a failure until it
    succeeds. One write transaction per attempt, so parallel guesses cannot all be checked
    before any is counted. Returns the ids of the rows recorded."""
    t = now()
    with cmdr.writing(wake=False):
        for key, limit in keys_and_limits:
            recent = _recent_failures(key, t - THROTTLE_WINDOW_S)
            if len(recent) >= limit:
                wait = int(recent[-limit] + THROTTLE_WINDOW_S - t) + 1
                raise TooManyRequests("too_many_attempts",
                                      f"too many failed logins for this {key.split(':')[0]}; try again in {wait} s",
                                      retry_after=wait)
        return [LoginFailure.create(key=key, ts=t).id for key, _ in keys_and_limits]


def login(cmdr: Commander, username: str, password: str, address: str | None) -> tuple[str, Session, User]:
    """Check the password, throttled per account and per address; returns a new session key.
    The attempt counts as a failure from before the check (see _count_attempt); a success takes
    its own count back and clears the account's earlier failures."""
    keys = [(f"account:{username.lower()}", ACCOUNT_FAILURES), (f"address:{address}", ADDRESS_FAILURES)]
    counted = _count_attempt(cmdr, keys)
    user = User.get_or_none(User.username == username)
    usable = user is not None and user.disabled_at is None
    ok, rehash = offload(cmdr, passwords.verify, password,
                         user.password_hash if usable else passwords.dummy_hash())
    if not (ok and usable):
        with cmdr.writing(wake=False):
            audit.record(f"user:{username}", "login.failed", username)
        raise Unauthenticated("unauthenticated", "wrong user name or password")
    changes = {"last_login_at": now()}
    if rehash:  # the iteration count went up since this hash was made
        changes["password_hash"] = offload(cmdr, passwords.hash_password, password)
    with cmdr.writing():
        LoginFailure.delete().where(LoginFailure.id.in_(counted) | (
            (LoginFailure.key == keys[0][0]) & (LoginFailure.id < counted[0]))).execute()
        User.update(**changes).where(User.id == user.id).execute()
        key = secrets.token_urlsafe(32)
        session = Session.create(key_hash=token_hash(key), user=user.id, csrf_token=secrets.token_urlsafe(32),
                                 expires_at=now() + cmdr.settings.session_ttl, address=address)
        audit.record(f"user:{username}", "login", username)
    return key, session, User.get_by_id(user.id)


def session_for(key: str) -> tuple[Session, User] | None:
    """The live session behind a cookie value, or None (expired, signed out, user disabled)."""
    session = Session.get_or_none(Session.key_hash == token_hash(key))
    if session is None or session.expires_at <= now():
        return None
    user = User.get_by_id(session.user_id)
    if user.disabled_at is not None:
        return None
    return session, user


def csrf_ok(session: Session, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(session.csrf_token, presented)


def logout(cmdr: Commander, key: str) -> None:
    found = session_for(key)
    if found:
        with cmdr.writing():
            Session.delete().where(Session.id == found[0].id).execute()
            audit.record(f"user:{found[1].username}", "logout", found[1].username)


def purge_expired() -> None:
    t = now()
    Session.delete().where(Session.expires_at <= t).execute()
    LoginFailure.delete().where(LoginFailure.ts <= t - THROTTLE_WINDOW_S).execute()
