from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from commander import accounts
from commander.exceptions import Unauthenticated
from commander.models import User
from commander.permissions import PUBLIC, ROLES
from commander.auth import SESSION_COOKIE, end_session, principal, set_session_cookie
from commander.routes import api_route, commander
from commander.schemas import LoginIn, SessionOut, UserCreate, UserList, UserOut, UserUpdate

bp = Blueprint("accounts", __name__)


def session_out(session, user) -> SessionOut:
    return SessionOut(username=user.username, role=user.role, permissions=sorted(ROLES[user.role]),
                      csrf_token=session.csrf_token, expires_at=session.expires_at)


def user_out(user: User) -> UserOut:
    return UserOut.from_row(user, disabled=user.disabled_at is not None)


@api_route(bp, "POST", "/session", permission=PUBLIC, body=LoginIn, response=SessionOut)
def login(body: LoginIn):
    """Log in: sets an HttpOnly session cookie (Secure over TLS); throttled per account and address."""
    key, session, user = accounts.login(commander(), body.username, body.password, request.remote_addr)
    response = jsonify(session_out(session, user).model_dump(mode="json"))
    set_session_cookie(commander(), response, key)
    return response


@api_route(bp, "GET", "/session", permission=PUBLIC, response=SessionOut)
def current_session():
    """The session behind the cookie, with its CSRF token; 401 without one."""
    found = accounts.session_for(request.cookies.get(SESSION_COOKIE, ""))
    if found is None:
        raise Unauthenticated("unauthenticated", "no session: log in with POST /api/session")
    return session_out(*found)


@api_route(bp, "DELETE", "/session", permission=PUBLIC, status=204)
def logout():
    """Log out: ends the session (needs its CSRF token) and clears the cookie."""
    return end_session(commander(), current_app.response_class(status=204))


@api_route(bp, "GET", "/users", permission="admin", response=UserList)
def list_users():
    """Operator accounts."""
    return UserList(users=[user_out(u) for u in User.select().order_by(User.id)])


@api_route(bp, "POST", "/users", permission="admin", body=UserCreate, response=UserOut, status=201)
def create_user(body: UserCreate):
    """Create an operator account with a role preset; you must hold all of the role's permissions."""
    caller = principal()
    return user_out(accounts.create_user(commander(), body.username, body.password, body.role, caller.actor,
                                         creator=caller.permissions))


@api_route(bp, "PATCH", "/users/<id:user_id>", permission="admin", body=UserUpdate, response=UserOut)
def update_user(user_id: int, body: UserUpdate):
    """Change a user's role, disable or enable it, or reset its password, if you hold all its permissions.

    A new role's permissions must be yours too; a reset ends the user's sessions; the last enabled
    admin cannot be disabled or demoted (409)."""
    caller = principal()
    return user_out(accounts.update_user(commander(), user_id, caller.actor, body.role, body.disabled,
                                         body.password, changer=caller.permissions))
