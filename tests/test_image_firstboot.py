"""The first boot, simulated: a systemd podman container (Debian of the base image's release)
whose /boot/firmware holds the built image's boot partition, running the real first-boot path:
firstrun.sh as the kernel command line's `systemd.run=` runs it on Bookworm-based images, then a
reboot; cloud-init from Debian's packages reading the NoCloud seed on Trixie-based ones. The
N0D3 it installs registers with a live Commander and runs a task with the fake `claude`.

The container is x86_64, so the image carries x86_64 wheels here; everything else is the image
a person would flash. It shares the host's network, as a Pi shares the Commander's LAN.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest

import podman
from commander.discovery import addresses_for
from fakes import anthropic_api
from harness import FAKES, Commander, wait_until
from images.pi5.boot_files import Spec, Wifi, nm_connection
from images.pi5 import claude_code
from images.pi5.build import build
from test_image import BOOT_SECTORS, BOOT_START, KEY, MISSING, PASSPHRASE, SECTOR, make_base, mtools_env

pytestmark = [pytest.mark.slow, pytest.mark.containers,
              pytest.mark.skipif(bool(MISSING) or podman.missing() is not None,
                                 reason=podman.missing() or f"needs {', '.join(MISSING)}")]

# What Raspberry Pi OS Lite has that the first boot uses; debootstrap does not resolve
# cryptography's virtual cffi dependency, so cloud-init's image names it.
BOOKWORM = ["python3", "openssh-server", "sudo"]
TRIXIE = BOOKWORM + ["cloud-init", "python3-cffi-backend"]
# Raspberry Pi OS points cloud-init's NoCloud at the boot partition; this container does the same.
CLOUD_CFG = Path(__file__).parent / "fixtures" / "pi-cloud-init.cfg"


def flash(tmp_path: Path, debian: str, spec: Spec, wheel: Path, boot_sectors: int = BOOT_SECTORS, **options) -> Path:
    """Build the image (`options`: more of build's) and copy its boot partition out, as the Pi would mount it."""
    image = build(make_base(tmp_path / f"{debian}.img", debian=debian, boot_sectors=boot_sectors), tmp_path / "n0d3.img",
                  spec, wheel=wheel, machine="x86_64", say=lambda _: None, **options)
    boot = tmp_path / "boot"
    boot.mkdir()
    subprocess.run(["mcopy", "-s", "-n", "-i", f"{image}@@{BOOT_START * SECTOR}", "::/*", str(boot)], check=True,
                   capture_output=True, env=mtools_env())
    return boot


def power_on(boot: Path, suite: str, name: str, volumes: list[str] = (), claude: bool = True) -> podman.Container:
    """The Pi, with the fake `claude` on it unless `claude=False` (then only the SDK runner can run)."""
    image = podman.debian_image(f"pi-{suite}", TRIXIE if suite == "trixie" else BOOKWORM, suite=suite)
    box = podman.Container.start(image, f"{name}-{secrets.token_hex(3)}", network="host",
                                 volumes=[f"{boot}:/boot/firmware", *volumes], extra=["--no-hosts"])
    if claude:
        box.copy_in(FAKES / "claude", "/usr/local/bin/claude")
    return box


def reboot(box: podman.Container) -> None:
    podman.run("restart", "--time", "10", box.name)
    box.wait_booted()


def read(box: podman.Container, *argv: str) -> str:
    return box.exec(*argv).stdout.strip()


def reboot_towards(commander: Commander, box: podman.Container, base_url: str) -> dict:
    """Point the N0D3 at the Messages API stand-in (the API's own address on a real Pi), reboot,
    and return the node once it is active."""
    box.exec("sh", "-c", "mkdir -p /etc/systemd/system/m3shd-n0d3.service.d && printf "
             f"'[Service]\\nEnvironment=ANTHROPIC_BASE_URL={base_url}\\n' "
             "> /etc/systemd/system/m3shd-n0d3.service.d/messages-api.conf")
    reboot(box)
    return wait_until(lambda: next((n for n in commander.nodes() if n["state"] == "active"), None), 60,
                      what="the Pi to register")


def files_holding(box: podman.Container, secret: str) -> str:
    """The Pi's files (configuration, the N0D3's state and home, logs, its venv, homes, /tmp) holding `secret`."""
    return box.exec("grep", "-rlF", secret, "/etc", "/var/lib/m3shd", "/var/log", "/opt/m3shd", "/home", "/tmp",
                    check=False).stdout.strip()


def runs_a_task(commander: Commander, box: podman.Container) -> dict:
    # Active with its runner known (a node approved from pending reports it at its first heartbeat).
    node = wait_until(lambda: next((n for n in commander.nodes() if n["state"] == "active" and n["runner"]), None),
                      60, what=f"the N0D3 in {box.name} to register")
    assert "board=pi5" in node["capabilities"] and node["runner"] == "claude-cli"
    task = commander.api.submit_task("hello from a freshly flashed Pi")
    assert commander.wait_task(task["id"], timeout=60)["state"] == "succeeded"
    assert commander.api.get_task(task["id"])["node_id"] == node["id"]
    return node


def test_bookworm_first_boot_runs_firstrun_then_the_n0d3_joins_and_works(tmp_path, commander, m3shd_wheel):
    boot = flash(tmp_path, "bookworm", Spec(url=commander.url, join_token=commander.join_token, ssh_keys=(KEY,)),
                 m3shd_wheel)
    cmdline = (boot / "cmdline.txt").read_text()
    with power_on(boot, "bookworm", "pi-bookworm") as box:
        shipped_key = read(box, "cat", "/etc/ssh/ssh_host_ed25519_key.pub")
        # What systemd.run= does on the Pi: run firstrun.sh once, then reboot.
        box.exec("sh", "/boot/firmware/firstrun.sh")
        log = read(box, "cat", "/var/log/m3shd-firstboot.log")
        assert "m3shd first boot: done" in log, log
        assert (boot / "cmdline.txt").read_text() == cmdline.split(" systemd.run=")[0] + "\n"   # hook gone
        assert sorted(p.name for p in boot.iterdir()) == ["cmdline.txt", "config.txt", "issue.txt", "kernel8.img",
                                                         "kernel_2712.img"]   # token and wheels off the card
        serial = read(box, "cat", "/etc/machine-id")[-8:]   # a container has no board serial
        assert read(box, "cat", "/etc/hostname") == f"n0d3-{serial}"
        assert read(box, "cat", "/etc/ssh/ssh_host_ed25519_key.pub") != shipped_key   # made here, now
        assert read(box, "cat", "/home/m3shd/.ssh/authorized_keys") == KEY
        assert read(box, "passwd", "--status", "m3shd").split()[1] == "L"              # keys only
        assert read(box, "stat", "-c", "%a %U %G", "/etc/m3shd/n0d3.toml") == "640 root m3shd"
        assert read(box, "systemctl", "is-enabled", "m3shd-n0d3") == "enabled"
        reboot(box)
        runs_a_task(commander, box)
        assert read(box, "ps", "-o", "user=", "-C", "m3shd") == "m3shd"



def test_a_pi_without_any_runner_of_its_own_runs_a_task_on_the_commanders_key(tmp_path, commander, m3shd_wheel):
    """Issue 24: flashed, it has no `claude` and no key; the Commander holds the API key
    (`m3shd runners set-key`) and seals it into its leases; its SDK runner calls the Messages API
    (here the loopback stand-in) with it, and the key lands in none of the Pi's files or logs."""
    key = "sk-ant-api03-" + secrets.token_hex(40) + "-pi"
    server, base_url = anthropic_api.serve(api_key=key)
    try:
        boot = flash(tmp_path, "bookworm", Spec(url=commander.url, join_token=commander.join_token), m3shd_wheel)
        with power_on(boot, "bookworm", "pi-sdk", claude=False) as box:
            box.exec("sh", "/boot/firmware/firstrun.sh")
            waiting = reboot_towards(commander, box, base_url)
            assert waiting["runner"] is None and "m3shd runners set-key" in waiting["problem"]
            commander.api.store_runner_credential("api_key", key)
            wait_until(lambda: commander.api.get_node(waiting["id"])["runner"] == "anthropic-sdk", 30,
                       what="the Pi's SDK runner to be ready on the Commander's key")
            task = commander.api.submit_task("hello from a Pi with no key of its own")
            done = commander.wait_task(task["id"], timeout=60)
            assert done["state"] == "succeeded" and done["runner"] == "anthropic-sdk", done
            assert server.keys == [key]
            assert files_holding(box, key) == ""
            pid = read(box, "systemctl", "show", "--property", "MainPID", "--value", "m3shd-n0d3")
            # Read as its own user: root in the container lacks the ptrace right /proc/PID/environ asks.
            environ = box.exec("cat", f"/proc/{pid}/environ", user="m3shd").stdout
            assert f"ANTHROPIC_BASE_URL={base_url}" in environ and key not in environ
    finally:
        server.shutdown()
        server.server_close()

@pytest.mark.skipif(not addresses_for("0.0.0.0"), reason="needs a non-loopback IPv4 interface for multicast DNS")
def test_an_image_carrying_claude_code_runs_a_task_with_the_real_cli_on_the_commanders_key(tmp_path, commander,
                                                                                           m3shd_wheel):
    """`--claude-code`: the real native Claude Code (x86_64 here, as the container is; fetched from
    the npm registry once, then cached) goes on the card, is installed at first boot, and the N0D3's
    CLI runner runs a task with it on the API key the Commander holds, against the Messages API
    stand-in (the real CLI speaks to it as to the API)."""
    package = claude_code.fetch("latest", "x86_64")
    version = claude_code.check(package, "x86_64")
    key = "sk-ant-api03-" + secrets.token_hex(40) + "-cc"
    server, base_url = anthropic_api.serve(api_key=key)
    try:
        boot = flash(tmp_path, "bookworm", Spec(url=commander.url, join_token=commander.join_token), m3shd_wheel,
                     boot_sectors=1048576, claude_code_package=package)   # Raspberry Pi OS's 512 MiB boot partition
        with power_on(boot, "bookworm", "pi-claude-code", claude=False) as box:
            box.exec("sh", "/boot/firmware/firstrun.sh")
            log = read(box, "cat", "/var/log/m3shd-firstboot.log")
            assert f"Claude Code {version} (Claude Code) installed" in log, log
            assert not (boot / "m3shd").exists()   # the 180 MB left the card with the rest of the payload
            assert read(box, "stat", "-c", "%a %U", "/opt/claude-code/claude") == "755 root"
            node = reboot_towards(commander, box, base_url)
            assert node["runner"] == "claude-cli", node
            commander.api.store_runner_credential("api_key", key)
            task = commander.api.submit_task("hello from Claude Code on a Pi")
            done = commander.wait_task(task["id"], timeout=120)
            assert done["state"] == "succeeded" and done["runner"] == "claude-cli", done
            assert "hello from Claude Code on a Pi" in done["output"] and done["usage"]["input_tokens"] > 0
            assert key in server.keys
            # Claude Code keeps its settings in the N0D3's home; the key it was handed stays out of them.
            assert files_holding(box, key) == ""
    finally:
        server.shutdown()
        server.server_close()


def test_a_tokenless_image_without_url_finds_the_commander_waits_pending_and_works_once_approved(tmp_path,
                                                                                                 m3shd_wheel):
    service = f"_m3t{secrets.token_hex(3)}._tcp.local."   # apart from other Commanders on this LAN
    # Bound beyond loopback it serves HTTPS from its mesh CA (tls = "auto"): the Pi, told nothing,
    # trusts the CA it is shown first, and the operator approves it.
    cmd = Commander(tmp_path, {"M3SHD_COMMANDER_MDNS_TYPE": service}, tls=True)
    cmd.stop()
    cmd.env["M3SHD_COMMANDER_BIND"] = f"0.0.0.0:{cmd.port}"
    cmd.env.pop("M3SHD_COMMANDER_TLS")
    cmd.start()
    try:
        boot = flash(tmp_path, "bookworm", Spec(), m3shd_wheel)
        with (boot / "m3shd" / "n0d3.toml").open("a") as settings:
            settings.write(f'mdns_type = "{service}"\n')
        with power_on(boot, "bookworm", "pi-pending") as box:
            box.exec("sh", "/boot/firmware/firstrun.sh")
            reboot(box)
            waiting = wait_until(lambda: cmd.api.list_pending(), 60, what="the Pi to ask to join")
            assert cmd.nodes() == [] and "board=pi5" in waiting[0]["capabilities"]
            cmd.api.approve_pending(waiting[0]["id"])
            runs_a_task(cmd, box)
    finally:
        cmd.stop()


def test_trixie_first_boot_runs_through_cloud_init_and_joins_over_https(tmp_path, m3shd_wheel):
    """The card carries the join string: the Pi fetches the Commander's CA, checks it against the
    string's hash, and verifies every connection with it from then on. Afterwards nothing secret is
    left on the card: the token and the Wi-Fi key are in the root file system, readable by root and
    the N0D3 alone; SSH is on, as Raspberry Pi Imager's user-data turns it on."""
    commander = Commander(tmp_path / "commander", tls=True)
    wifi = Wifi("home net", PASSPHRASE, "GB")
    try:
        boot = flash(tmp_path, "trixie", Spec(url=commander.url, join_token=commander.join_string, ssh_keys=(KEY,),
                                              user="pi", wifi=wifi), m3shd_wheel)
        assert wifi.psk() in (boot / "m3shd" / "wifi.nmconnection").read_text()
        with power_on(boot, "trixie", "pi-trixie", [f"{CLOUD_CFG}:/etc/cloud/cloud.cfg.d/99-raspberrypi.cfg:ro"]) as box:
            status = box.exec("cloud-init", "status", "--wait", "--long", check=False, timeout=300).stdout
            output = read(box, "cat", "/var/log/cloud-init-output.log")
            assert "DataSourceNoCloud" in status and "m3shd first boot: done" in output, status + output
            runs_a_task(commander, box)
            assert read(box, "cat", "/var/lib/m3shd/n0d3/ca.pem") == commander.ca_file.read_text().strip()  # pinned
            assert read(box, "cat", "/home/pi/.ssh/authorized_keys") == KEY      # cloud-init made the user
            assert read(box, "systemctl", "is-enabled", "ssh") == "enabled"
            assert "sudo" in read(box, "id", "-nG", "pi").split()
            assert read(box, "passwd", "--status", "pi").split()[1] == "L"       # keys only
            connection = "/etc/NetworkManager/system-connections/m3shd-wifi.nmconnection"
            assert read(box, "stat", "-c", "%a %U %G", connection) == "600 root root"
            assert f"psk={wifi.psk()}" in read(box, "cat", connection)
            assert read(box, "cat", "/etc/hostname").startswith("n0d3-")
        assert not (boot / "m3shd").exists()
        secrets_seen = [path for path in boot.rglob("*") if path.is_file() and any(
            secret.encode() in path.read_bytes() for secret in (wifi.psk(), PASSPHRASE, commander.join_token))]
        assert secrets_seen == []   # a stolen card holds no key, token or passphrase
    finally:
        commander.stop()


def test_the_wifi_profile_is_one_networkmanager_loads(tmp_path):
    """Raspberry Pi OS (Bookworm and Trixie) runs NetworkManager and firstboot.sh installs our
    keyfile as it is, so NetworkManager itself must read it: the SSID, WPA-PSK and the derived key."""
    wifi = Wifi("home net", PASSPHRASE, "GB")
    keyfile = tmp_path / "m3shd-wifi.nmconnection"
    keyfile.write_text(nm_connection(wifi))
    # debootstrap does not resolve polkitd's virtual logind dependency: name its provider.
    image = podman.debian_image("networkmanager", ["network-manager", "libpam-systemd"], suite="bookworm")
    # Its own network namespace: NetworkManager there manages nothing of this machine's.
    with podman.Container.start(image, f"pi-nm-{secrets.token_hex(3)}") as box:
        target = "/etc/NetworkManager/system-connections/m3shd-wifi.nmconnection"
        box.copy_in(keyfile, target)
        box.exec("chmod", "600", target)
        box.exec("nmcli", "connection", "reload")
        shown = read(box, "nmcli", "--show-secrets", "--get-values", "802-11-wireless.ssid,"
                     "802-11-wireless-security.key-mgmt,802-11-wireless-security.psk", "connection", "show",
                     "m3shd-wifi")
    assert shown.splitlines() == ["home net", "wpa-psk", wifi.psk()]
