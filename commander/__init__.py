"""The Commander: the mesh's single source of truth (Flask + gunicorn + peewee)."""


def __getattr__(name: str):
    # `from commander import create_app` loads the app on first use, not with the package: importing
    # commander.cli (at every `m3shd` start) must not load Flask and peewee, and `commander serve`
    # patches gevent in before they load.
    if name == "create_app":
        from commander.app import create_app

        return create_app
    raise AttributeError(f"module 'commander' has no attribute {name!r}")


__all__ = ["create_app"]
