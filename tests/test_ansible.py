"""Ansible grows the mesh: site.yml over SSH against real systemd containers (podman).

One module-scoped mesh: a Commander and two N0D3S (one shaped like a Pi 5), each a Debian
container with systemd and sshd that Ansible reaches as a sudo user with a key, the way an
operator reaches a fresh Pi. The inventory is a copy of inventory/example with the hosts
swapped in, secrets in a real ansible-vault file. The package comes from a wheel of this
checkout plus a wheelhouse of its dependencies (cached under /var/tmp), installed offline.

The tests run in order: converge, a task runs on a node, a second run and a check-mode run
change nothing, a reboot keeps the nodes, a fourth host joins. Then the roles' molecule
scenarios, and the static checks (syntax, ansible-lint, yamllint, rendered launchd plists).
"""

from __future__ import annotations

import hashlib
import json
import os
import plistlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import podman
from harness import ARTIFACTS, wait_until
from m3shd.client import ApiClient, CommanderUnreachable

pytestmark = [pytest.mark.slow, pytest.mark.containers]

ROOT = Path(__file__).parent.parent
VENV_BIN = Path(sys.executable).parent
IMAGE_PACKAGES = ["openssh-server", "python3", "python3-venv", "sudo"]
OPERATOR = "deploy"  # the sudo user a fresh Pi or Debian box has, reached with an SSH key
PORT = 8470
# A network of these tests' own, with fixed addresses: a rebooted container keeps its address,
# as a machine on a LAN keeps its name.
NETWORK, SUBNET = "m3shd-ansible", "10.89.71.0/24"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def tool(name: str) -> str:
    """An Ansible tool from this venv (pip puts them beside the interpreter)."""
    found = VENV_BIN / name
    if not found.exists():
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return str(found)


def ansible_env(**extra) -> dict:
    env = podman.env() | {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1",
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
    }
    return env | extra


# --- the package, offline ------------------------------------------------------------------------

def wheelhouse() -> Path:
    """Wheels of m3shd[commander,n0d3]'s dependencies, cached by pyproject.toml's dependency lists."""
    project = __import__("tomllib").loads((ROOT / "pyproject.toml").read_text())["project"]
    recipe = json.dumps([project["dependencies"], project["optional-dependencies"]["commander"],
                         project["optional-dependencies"]["n0d3"], sys.version_info[:2]], sort_keys=True)
    where = podman.CACHE / "wheelhouse" / hashlib.sha256(recipe.encode()).hexdigest()[:12]
    if not (where / ".complete").exists():
        podman.say(f"building a wheelhouse of m3shd's dependencies in {where}")
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(where),
                               f"{ROOT}[commander,n0d3]"], capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, f"pip wheel failed:\n{done.stderr[-3000:]}"
        for own in where.glob("m3shd-*.whl"):
            own.unlink()
        (where / ".complete").touch()
    return where


def build_wheel(into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(into), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    return next(into.glob("m3shd-*.whl"))


class Target:
    """What every target container needs: the image, and this checkout's wheel plus its wheelhouse."""

    def __init__(self, work: Path):
        podman.require()
        self.image = podman.debian_image("ansible-target", IMAGE_PACKAGES)
        self.dist = work / "dist"
        self.wheel = build_wheel(self.dist)
        self.wheels = wheelhouse()


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Target:
    return Target(tmp_path_factory.mktemp("target"))


# --- the mesh --------------------------------------------------------------------------------------

class Mesh:
    """The containers, the operator's inventory and the playbook runs against them."""

    def __init__(self, work: Path, target: Target):
        self.work = work
        self.boxes: dict[str, podman.Container] = {}
        self.groups: dict[str, list[str]] = {"commander": [], "debians": [], "pis": []}
        self.runs = 0
        self.image, self.dist, self.wheel, self.wheels = target.image, target.dist, target.wheel, target.wheels
        self.key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        self.inventory = work / "inventory"
        shutil.copytree(ROOT / "inventory" / "example", self.inventory)
        self.vault_password = work / "vault-password"
        self.vault_password.write_text("correct horse battery staple\n")
        self.admin_password = "s3cret-admin-pw"
        self.api_key = "sk-ant-test-not-a-real-key-0123456789"
        vault = self.inventory / "group_vars" / "all" / "vault.yml"
        vault.write_text(yaml.safe_dump({"vault_m3shd_admin_password": self.admin_password,
                                         "vault_m3shd_anthropic_api_key": self.api_key}))
        subprocess.run([tool("ansible-vault"), "encrypt", "--vault-password-file", str(self.vault_password),
                        str(vault)], check=True, env=ansible_env(), capture_output=True)
        assert vault.read_text().startswith("$ANSIBLE_VAULT;"), "the vault file was not encrypted"
        # What only the tests need: the package from this checkout, offline, and the fake claude.
        (self.inventory / "group_vars" / "all" / "tests.yml").write_text(yaml.safe_dump({
            "common_package": f"/srv/dist/{self.wheel.name}",
            "common_pip_extra_args": "--no-index --find-links /srv/wheelhouse",
            "n0d3_claude_executable_src": str(ROOT / "tests" / "fakes" / "claude"),
            "common_apt_cache_valid_time": 10 ** 8,
            "n0d3_settings": {"claim_wait": 5.0},
        }))
        self._api: ApiClient | None = None

    def add(self, name: str, group: str) -> podman.Container:
        address = f"{SUBNET.rsplit('.', 1)[0]}.{10 + len(self.boxes)}"
        box = podman.Container.start(self.image, f"m3shd-ansible-{name}", hostname=name, ip=address,
                                     network=podman.network(NETWORK, SUBNET), volumes=[
            f"{self.dist}:/srv/dist:ro", f"{self.wheels}:/srv/wheelhouse:ro"])
        # What an OS image's first boot gives an operator: a sudo user reachable by key.
        public = self.key.with_suffix(".pub").read_text()
        box.exec("sh", "-euc", f"""
            useradd --create-home --shell /bin/bash {OPERATOR}
            echo '{OPERATOR} ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/{OPERATOR}
            install -d -m 700 -o {OPERATOR} -g {OPERATOR} /home/{OPERATOR}/.ssh
            printf '%s' '{public.strip()}' > /home/{OPERATOR}/.ssh/authorized_keys
            chown {OPERATOR}: /home/{OPERATOR}/.ssh/authorized_keys
            systemctl is-active --quiet ssh || systemctl start ssh""")
        self.boxes[name] = box
        self.groups[group].append(name)
        self.write_hosts()
        return box

    def write_hosts(self) -> None:
        def host(name: str) -> dict:
            return {"ansible_host": self.boxes[name].ip}

        commander = self.groups["commander"][0]
        hosts = {"all": {
            "vars": {"ansible_user": OPERATOR, "ansible_ssh_private_key_file": str(self.key),
                     "ansible_ssh_common_args": f"-o StrictHostKeyChecking=accept-new "
                                                f"-o UserKnownHostsFile={self.work / 'known_hosts'}"},
            "children": {
                "commander": {"hosts": {commander: host(commander) | {
                    "commander_url": self.url}}},
                "n0d3s": {"children": {
                    "debians": {"hosts": {n: host(n) for n in self.groups["debians"]}},
                    # Shaped like a Pi 5: the labels a real one would declare (the agent adds arch=x86_64 here).
                    "pis": {"hosts": {n: host(n) | {"n0d3_capabilities": ["pi5", "arm64"]}
                                      for n in self.groups["pis"]}},
                }},
                "bridge": {"hosts": {}},
            }}}
        (self.inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))

    def playbook(self, *args: str, check_ok: bool = True) -> dict[str, dict]:
        """Run ansible-playbook site.yml; returns the recap per host. The log goes to test-artifacts."""
        self.runs += 1
        log = ARTIFACTS / "ansible" / f"run-{self.runs}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        done = subprocess.run([tool("ansible-playbook"), "site.yml", "-i", str(self.inventory / "hosts.yml"),
                               "--vault-password-file", str(self.vault_password), *args],
                              cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=1200)
        log.write_text(done.stdout + done.stderr)
        podman.say(f"ansible-playbook run {self.runs} {' '.join(args)}: exit {done.returncode} "
                   f"in {time.monotonic() - started:.0f} s (log: {log})")
        if check_ok:
            assert done.returncode == 0, f"ansible-playbook failed (exit {done.returncode}):\n{done.stdout[-6000:]}{done.stderr[-3000:]}"
        for secret in (self.admin_password, self.api_key, "m3j_"):
            assert secret not in done.stdout + done.stderr, "a secret reached the playbook's output"
        return {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
                for m in RECAP.finditer(done.stdout)}

    def m3shd(self, *args: str) -> subprocess.CompletedProcess:
        """`m3shd ARGS` on the commander host, as its service user."""
        return self.boxes[self.groups["commander"][0]].exec(
            "runuser", "-u", "m3shd", "--", "env", "M3SHD_CONFIG_DIR=/etc/m3shd", "M3SHD_DATA_DIR=/var/lib/m3shd",
            "/opt/m3shd/venv/bin/m3shd", *args)

    @property
    def url(self) -> str:
        """Bound beyond loopback, the Commander serves HTTPS from its mesh CA."""
        return f"https://{self.boxes[self.groups['commander'][0]].ip}:{PORT}"

    @property
    def ca_file(self) -> Path:
        """The mesh CA as the roles installed it on the commander host, for this test's own client."""
        path = self.work / "mesh-ca.pem"
        if not path.exists():
            path.write_text(self.boxes[self.groups["commander"][0]].exec("cat", "/etc/m3shd/mesh-ca.pem").stdout)
        return path

    @property
    def api(self) -> ApiClient:
        if self._api is None:
            token = json.loads(self.m3shd("token", "create", "tests", "--role", "admin", "--local", "--json").stdout)
            self._api = ApiClient(self.url, token["token"], ca_file=str(self.ca_file))
        return self._api

    def nodes(self) -> dict[str, dict]:
        return {n["name"]: n for n in self.api.list_nodes()}

    def wait_active(self, names: list[str], timeout: float = 60) -> dict[str, dict]:
        def active():
            try:
                nodes = self.nodes()
            except CommanderUnreachable:
                return None
            return nodes if all(nodes.get(n, {}).get("state") == "active" for n in names) else None

        return wait_until(active, timeout, every=0.5, what=f"nodes {names} to be active")

    def stop(self) -> None:
        for name, box in self.boxes.items():
            (ARTIFACTS / "ansible" / f"{name}.journal").write_text(
                box.exec("journalctl", "--no-pager", "-n", "300", check=False).stdout)
        if self.boxes:  # all at once: each takes seconds to shut systemd down
            podman.run("rm", "--force", "--time", "5", *(box.name for box in self.boxes.values()), check=False)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, target):
    if shutil.which("ssh") is None:
        pytest.skip("ssh is not installed (Debian: apt-get install openssh-client)")
    built = Mesh(tmp_path_factory.mktemp("ansible"), target)
    try:
        built.add("hub", "commander")
        built.add("worker", "debians")
        built.add("pi", "pis")
        yield built
    finally:
        built.stop()


def service_user(box: podman.Container, service: str) -> str:
    pid = box.exec("systemctl", "show", "--property=MainPID", "--value", service).stdout.strip()
    assert pid not in ("", "0"), f"{service} is not running on {box.name}"
    return box.exec("stat", "-c", "%U", f"/proc/{pid}").stdout.strip()


def assert_unchanged(recap: dict[str, dict], hosts: list[str]) -> None:
    assert set(hosts) <= set(recap), f"hosts missing from the recap: {recap}"
    changed = {h: r for h, r in recap.items() if r["changed"] or r["failed"] or r["unreachable"]}
    assert not changed, f"a second run changed something: {changed}"


# --- static checks: no containers needed --------------------------------------------------------------

def test_site_yml_passes_the_syntax_check():
    done = subprocess.run([tool("ansible-playbook"), "--syntax-check", "site.yml"], cwd=ROOT, env=ansible_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ansible_lint_production_profile_is_clean():
    """Every role, the macOS task files included, against ansible-lint's strictest profile (.ansible-lint)."""
    done = subprocess.run([tool("ansible-lint"), "--nocolor"], cwd=ROOT, env=ansible_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert "profile 'production' was required, and it passed" in (done.stdout + done.stderr).lower()


def test_yamllint_is_clean():
    done = subprocess.run([tool("yamllint"), "--strict", ".ansible-lint", ".yamllint", "site.yml", "playbooks",
                           "inventory", "roles", "tests/ansible"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("cpu,prefix", [("arm64", "/opt/homebrew"), ("x86_64", "/usr/local")])
def test_launchd_plists_render_valid_for_each_mac(tmp_path, cpu, prefix):
    inventory = tmp_path / "macs.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"mac": {"cpu": cpu, "ansible_connection": "local",
                                                                     "ansible_python_interpreter": sys.executable}}}}))
    done = subprocess.run([tool("ansible-playbook"), "-i", str(inventory), "tests/ansible/render-launchd.yml",
                           "-e", f"out={tmp_path}"], cwd=ROOT, env=ansible_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    plists = {p.stem.split("-", 1)[1]: plistlib.loads(p.read_bytes()) for p in tmp_path.glob("mac-*.plist")}
    assert sorted(plists) == ["bridge", "commander", "n0d3"]
    n0d3 = plists["n0d3"]
    assert n0d3["Label"] == "com.m3shd.n0d3"
    assert n0d3["ProgramArguments"] == [f"{prefix}/var/m3shd/venv/bin/m3shd", "n0d3", "run"]
    assert n0d3["UserName"] == "alice"  # a LaunchDaemon runs as the login user, not root
    assert n0d3["RunAtLoad"] is True and n0d3["KeepAlive"] == {"SuccessfulExit": False}
    assert n0d3["ExitTimeOut"] == 630
    assert n0d3["EnvironmentVariables"]["PATH"].split(":")[:2] == [f"{prefix}/var/m3shd/venv/bin", f"{prefix}/bin"]
    assert n0d3["EnvironmentVariables"]["M3SHD_CONFIG_DIR"] == "/Users/alice/Library/Application Support/m3shd"
    assert n0d3["StandardErrorPath"] == "/Users/alice/Library/Logs/m3shd/n0d3.log"
    assert plists["commander"]["ProgramArguments"][1:] == ["commander", "serve"]
    bridge = plists["bridge"]  # a LaunchAgent: the GUI session's user, so no UserName
    assert "UserName" not in bridge and bridge["ProcessType"] == "Interactive"
    assert bridge["ProgramArguments"][1:] == ["bridge", "run"]


# --- the roles' molecule scenarios -------------------------------------------------------------------

@pytest.mark.parametrize("role", ["n0d3"])
def test_molecule_scenario(role, target):
    """converge, idempotence (a second converge changes nothing), verify: roles/<role>/molecule/default.
    The n0d3 role's scenario converges a Commander first (the commander role), and verifies both."""
    log = ARTIFACTS / "ansible" / f"molecule-{role}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    done = subprocess.run([tool("molecule"), "test"], cwd=ROOT / "roles" / role, capture_output=True, text=True,
                          timeout=1500, env=ansible_env(
                              ANSIBLE_ROLES_PATH=str(ROOT / "roles"), M3SHD_MOLECULE_IMAGE=target.image,
                              M3SHD_MOLECULE_DIST=str(target.dist), M3SHD_MOLECULE_WHEELHOUSE=str(target.wheels),
                              M3SHD_MOLECULE_PACKAGE=f"/srv/dist/{target.wheel.name}",
                              M3SHD_MOLECULE_FAKE_CLAUDE=str(ROOT / "tests" / "fakes" / "claude")))
    log.write_text(done.stdout + done.stderr)
    podman.say(f"molecule test ({role}): exit {done.returncode} in {time.monotonic() - started:.0f} s (log: {log})")
    assert done.returncode == 0, (done.stdout + done.stderr)[-8000:]
    for step in ("converge", "idempotence", "verify"):
        assert f"[default > {step}] Executed: Successful" in done.stdout + done.stderr, f"molecule skipped {step}"


# --- end to end, in order ----------------------------------------------------------------------------

def test_site_converges_and_every_n0d3_joins(mesh):
    recap = mesh.playbook()
    assert {h for h, r in recap.items() if r["changed"]} == {"hub", "worker", "pi"}
    nodes = mesh.wait_active(["worker", "pi"])
    assert len(nodes) == 2
    assert {"pi5", "arm64"} <= set(nodes["pi"]["capabilities"]) and "pi5" not in nodes["worker"]["capabilities"]
    assert nodes["pi"]["slots"] == 1 and nodes["worker"]["slots"] == 2
    assert {n["runner"] for n in nodes.values()} == {"claude-cli"}
    # The services run as the dedicated user, and the join token never lands on a node's disk.
    for name, service in (("hub", "m3shd-commander"), ("worker", "m3shd-n0d3"), ("pi", "m3shd-n0d3")):
        assert service_user(mesh.boxes[name], service) == "m3shd"
    worker = mesh.boxes["worker"]
    assert worker.exec("grep", "-r", "m3j_", "/etc/m3shd", "/var/lib/m3shd", check=False).returncode == 1
    # Each N0D3 verifies the Commander with the mesh CA the play carried over from the hub.
    for name in ("worker", "pi"):
        assert mesh.boxes[name].exec("cat", "/etc/m3shd/mesh-ca.pem").stdout == mesh.ca_file.read_text()
        assert 'ca_file = "/etc/m3shd/mesh-ca.pem"' in mesh.boxes[name].exec("cat", "/etc/m3shd/n0d3.toml").stdout
    # The API key from the vault reaches the service through a root-only environment file.
    assert worker.exec("stat", "-c", "%U %a", "/etc/m3shd/n0d3.env").stdout.split() == ["root", "600"]
    assert worker.exec("cat", "/etc/m3shd/n0d3.env").stdout == f"ANTHROPIC_API_KEY={mesh.api_key}\n"


def test_a_task_submitted_through_the_api_runs_on_a_node(mesh):
    task = mesh.api.submit_task("hello from ansible", requires=["pi5", "arm64"])
    done = wait_until(lambda: (t := mesh.api.get_task(task["id"], wait=2)) and t["state"] in ("succeeded", "failed") and t,
                      60, what="the task to finish")
    assert done["state"] == "succeeded", done
    assert done["output"] == "echo: hello from ansible"
    assert done["node_id"] == mesh.nodes()["pi"]["id"]


def test_the_admin_password_from_the_vault_logs_in(mesh):
    import requests

    url = f"{mesh.url}/api/session"
    good = requests.post(url, json={"username": "admin", "password": mesh.admin_password}, timeout=10,
                         verify=str(mesh.ca_file))
    assert good.status_code == 200, good.text
    bad = requests.post(url, json={"username": "admin", "password": "wrong"}, timeout=10, verify=str(mesh.ca_file))
    assert bad.status_code == 401


def test_a_second_run_changes_nothing(mesh):
    before = mesh.nodes()
    assert_unchanged(mesh.playbook(), ["hub", "worker", "pi"])
    assert mesh.nodes().keys() == before.keys()


def test_check_mode_reports_no_changes(mesh):
    assert_unchanged(mesh.playbook("--check"), ["hub", "worker", "pi"])


def test_services_come_back_after_a_reboot_as_the_same_nodes(mesh):
    before = {name: node["id"] for name, node in mesh.nodes().items()}
    for name in ("hub", "pi"):
        podman.run("restart", "--time", "20", mesh.boxes[name].name, timeout=120)
        mesh.boxes[name].wait_booted()
    after = mesh.wait_active(["worker", "pi"], timeout=90)
    assert {name: node["id"] for name, node in after.items()} == before


def test_a_fourth_host_in_the_inventory_joins_on_the_next_run(mesh):
    mesh.add("pi-two", "pis")
    recap = mesh.playbook()
    assert recap["pi-two"]["changed"] > 0
    assert_unchanged({h: r for h, r in recap.items() if h != "pi-two"}, ["hub", "worker", "pi"])
    nodes = mesh.wait_active(["worker", "pi", "pi-two"])
    assert sorted(nodes) == ["pi", "pi-two", "worker"]  # three nodes: no duplicates, no ghosts
    assert "pi5" in nodes["pi-two"]["capabilities"]
