"""Podman systemd containers for the slow test tiers, from a Debian rootfs built here.

No registry can be reached, so base images come from `debootstrap` and `podman import`,
cached under /var/tmp keyed by their recipe (a warm cache makes them instant; a cold one
takes a few minutes per image). This machine runs systemd in containers only with the
settings in tests/podman/containers.conf (runc, cgroupfs, lowered ulimits); every podman
call here, and any tool the tests start (molecule, ansible's podman connection), gets them
through `env()`.

    from tests import podman                      # or `import podman` from tests/
    podman.require()                              # pytest.skip with the missing tool's name
    image = podman.debian_image("ansible-target", ["openssh-server", "python3"])
    with podman.Container.start(image, "commander") as box:
        box.exec("systemctl", "is-system-running", "--wait")

Stable API: env(), require(), debian_image(), network(), Container (start/exec/ip/stop), run().
Set M3SHD_PODMAN_CACHE to keep the cache and storage elsewhere; M3SHD_DEBIAN_MIRROR for a mirror.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
CONTAINERS_CONF = HERE / "podman" / "containers.conf"
CACHE = Path(os.environ.get("M3SHD_PODMAN_CACHE", "/var/tmp/m3shd-podman"))
MIRROR = os.environ.get("M3SHD_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
# Bump when the way images are made changes, so cached ones are rebuilt.
RECIPE_VERSION = 1
# What every image has: systemd as init and what `systemctl` needs to talk to it.
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates", "iproute2")


class PodmanError(RuntimeError):
    pass


def say(message: str) -> None:
    print(f"podman: {message}", file=sys.stderr, flush=True)


def env() -> dict:
    """The environment for podman and for anything that calls it (molecule, ansible)."""
    storage = CACHE / "storage.conf"
    if not storage.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = storage.with_suffix(f".{os.getpid()}")
        tmp.write_text('[storage]\ndriver = "overlay"\n'
                       f'graphroot = "{CACHE / "storage"}"\nrunroot = "{CACHE / "run"}"\n')
        os.replace(tmp, storage)
    return dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF), CONTAINERS_STORAGE_CONF=str(storage))


def missing() -> str | None:
    """Why these containers cannot run here, or None."""
    for tool in ("podman", "debootstrap", "runc"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} is not installed (Debian: apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "podman systemd containers from a debootstrap rootfs need root here"
    return None


def require() -> None:
    """Skip the calling test (or module, at import) when podman or debootstrap is missing."""
    import pytest

    reason = missing()
    if reason:
        pytest.skip(reason, allow_module_level=True)


def run(*args: str, check: bool = True, input: str | None = None, timeout: float = 600,
        capture: bool = True) -> subprocess.CompletedProcess:
    """`podman ARGS` with this project's settings; raises PodmanError with podman's stderr."""
    done = subprocess.run(["podman", *args], env=env(), input=input, text=True, timeout=timeout,
                          capture_output=capture)
    if check and done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)} exited {done.returncode}: {(done.stderr or '').strip()}")
    return done


@contextlib.contextmanager
def _locked(name: str):
    """One builder per recipe at a time, across processes (parallel tests, other worktrees)."""
    (CACHE / "locks").mkdir(parents=True, exist_ok=True)
    with open(CACHE / "locks" / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def recipe_key(packages: list[str], suite: str = SUITE) -> str:
    recipe = {"version": RECIPE_VERSION, "suite": suite, "mirror": MIRROR, "packages": sorted(set(packages))}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def debian_image(tag: str, extra_packages: list[str] | tuple[str, ...] = (), suite: str = SUITE) -> str:
    """A podman image of Debian `suite` with systemd as init plus `extra_packages`; its name.

    Cached twice under M3SHD_PODMAN_CACHE, both keyed by the recipe: the rootfs tarball
    (rootfs/<key>.tar, reused if podman's storage is wiped) and the imported image
    (localhost/m3shd-<tag>:<key>).
    """
    packages = sorted(set(BASE_PACKAGES) | set(extra_packages))
    key = recipe_key(packages, suite)
    image = f"localhost/m3shd-{tag}:{key}"
    with _locked(key):
        if run("image", "exists", image, check=False).returncode == 0:
            return image
        tarball = CACHE / "rootfs" / f"{suite}-{key}.tar"
        if not tarball.exists():
            _debootstrap(tarball, packages, suite)
        say(f"importing {tarball.name} as {image}")
        run("import", "--change", "CMD=/sbin/init", "--change", "STOPSIGNAL=SIGRTMIN+3",
            str(tarball), image, timeout=900)
    return image


def _debootstrap(tarball: Path, packages: list[str], suite: str) -> None:
    tarball.parent.mkdir(parents=True, exist_ok=True)
    say(f"building a Debian {suite} rootfs with debootstrap (cold cache: a few minutes): {' '.join(packages)}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="build-") as work:
        root = Path(work) / "root"
        done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
                               suite, str(root), MIRROR], capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            log = root / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-3000:] if log.exists() else done.stderr[-3000:]
            raise PodmanError(f"debootstrap {suite} failed (exit {done.returncode}):\n{detail}")
        # Each container's systemd makes its own machine id at first boot (an empty file means
        # "generate one"); images carry no apt lists, and nothing tries to touch the console.
        (root / "etc" / "machine-id").write_text("")
        shutil.rmtree(root / "var" / "lib" / "apt" / "lists", ignore_errors=True)
        (root / "var" / "lib" / "apt" / "lists" / "partial").mkdir(parents=True)
        for unit in ("getty.target", "console-getty.service", "systemd-firstboot.service"):
            mask = root / "etc" / "systemd" / "system" / unit
            mask.unlink(missing_ok=True)
            mask.symlink_to("/dev/null")
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
                       check=True, timeout=900)
        os.replace(partial, tarball)
    say(f"rootfs ready in {time.monotonic() - started:.0f} s: {tarball}")


def network(name: str, subnet: str) -> str:
    """A podman network of the tests' own (made once), so containers can keep fixed addresses
    across restarts: Container.start(..., network=name, ip=...)."""
    if run("network", "exists", name, check=False).returncode != 0:
        made = run("network", "create", "--subnet", subnet, name, check=False)
        if made.returncode != 0 and run("network", "exists", name, check=False).returncode != 0:
            raise PodmanError(f"podman network create {name} failed: {made.stderr.strip()}")
    return name


class Container:
    """A running systemd container. Use as a context manager, or call stop()."""

    def __init__(self, name: str):
        self.name = name

    @classmethod
    def start(cls, image: str, name: str, *, hostname: str | None = None, network: str | None = None,
              ip: str | None = None, volumes: list[str] = (), publish: list[str] = (), extra: list[str] = (),
              wait: float = 60) -> "Container":
        """Start `image` with systemd as PID 1 and wait until systemd has finished booting."""
        run("rm", "--force", "--ignore", name, check=False)
        args = ["run", "--detach", "--name", name, "--hostname", hostname or name, "--systemd=always"]
        args += [f"--network={network}"] if network else []
        args += [f"--ip={ip}"] if ip else []
        for volume in volumes:
            args += ["--volume", volume]
        for port in publish:
            args += ["--publish", port]
        run(*args, *extra, image, "/sbin/init")
        box = cls(name)
        box.wait_booted(wait)
        return box

    def wait_booted(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.exec("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        logs = run("logs", "--tail", "30", self.name, check=False)
        raise PodmanError(f"{self.name}: systemd did not finish booting in {timeout:g} s (state {state!r})\n"
                          f"{logs.stdout}{logs.stderr}")

    def exec(self, *argv: str, check: bool = True, input: str | None = None, user: str | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
        """Run a command in the container (as root unless `user`), capturing its output."""
        args = ["exec", "--interactive"] if input is not None else ["exec"]
        args += ["--user", user] if user else []
        return run(*args, self.name, *argv, check=check, input=input, timeout=timeout)

    def copy_in(self, source: str | os.PathLike, destination: str) -> None:
        run("cp", str(source), f"{self.name}:{destination}")

    def inspect(self) -> dict:
        return json.loads(run("inspect", "--type", "container", self.name).stdout)[0]

    @property
    def ip(self) -> str:
        networks = self.inspect()["NetworkSettings"]
        addresses = [n.get("IPAddress") for n in (networks.get("Networks") or {}).values()]
        address = next((a for a in addresses + [networks.get("IPAddress")] if a), None)
        if not address:
            raise PodmanError(f"{self.name} has no IP address (network mode without its own address?)")
        return address

    def logs(self, tail: int = 100) -> str:
        done = run("logs", "--tail", str(tail), self.name, check=False)
        return done.stdout + done.stderr

    def stop(self) -> None:
        run("rm", "--force", "--time", "10", self.name, check=False)

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
