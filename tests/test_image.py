"""The Pi 5 image builder, on synthetic base images shaped like Raspberry Pi OS Lite arm64
(partition table, FAT32 boot partition with cmdline.txt/config.txt/issue.txt and kernels, a small
ext4 root), built here with sfdisk, mkfs.fat and mkfs.ext4; the result is read back with mtools."""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from images.pi5.boot_files import Spec, Wifi
from images.pi5.disk import partitions
from images.pi5.tools import ImageError

TOOLS = ("sfdisk", "mkfs.fat", "mkfs.ext4", "mcopy", "mdir", "mtype", "mmd", "xz")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
needs_tools = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (tests/system-packages/image.txt)")

SECTOR = 512
BOOT_START, BOOT_SECTORS = 8192, 131072      # 64 MiB FAT32 at 4 MiB, as pi-gen lays it out (smaller)
ROOT_START, ROOT_SECTORS = BOOT_START + BOOT_SECTORS, 32768   # 16 MiB ext4
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0m3shdTestKeyOnlyForTestsXXXXXXXXXXXXXXXXX operator@laptop"
PASSPHRASE = "correct horse battery staple"


def mtools_env() -> dict:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def fat_read(image: Path, name: str) -> str:
    return subprocess.run(["mtype", "-i", f"{image}@@{BOOT_START * SECTOR}", f"::/{name}"], capture_output=True,
                          check=True, env=mtools_env()).stdout.decode()


def fat_tree(image: Path) -> list[str]:
    out = subprocess.run(["mdir", "-/", "-b", "-i", f"{image}@@{BOOT_START * SECTOR}", "::/"], capture_output=True,
                         check=True, env=mtools_env()).stdout.decode()
    return [line.removeprefix("::/").rstrip("/") for line in out.splitlines() if line]


def make_base(path: Path, debian: str = "trixie", kernels=("kernel8.img", "kernel_2712.img"),
              issue: str = "Raspberry Pi reference 2025-10-01\nGenerated using pi-gen, stage2\n",
              boot_sectors: int = BOOT_SECTORS) -> Path:
    """A Raspberry Pi OS Lite-shaped disk image, made without root (sparse: its size costs no disk).
    `boot_sectors`: 1048576 is Raspberry Pi OS's own 512 MiB boot partition."""
    root_start = BOOT_START + boot_sectors
    with path.open("wb") as f:
        f.truncate((root_start + ROOT_SECTORS) * SECTOR)
    table = f"label: dos\nstart={BOOT_START}, size={boot_sectors}, type=c\nstart={root_start}, size={ROOT_SECTORS}, type=83\n"
    subprocess.run(["sfdisk", "--quiet", str(path)], input=table.encode(), check=True, capture_output=True)
    subprocess.run(["mkfs.fat", "-F", "32", "-n", "bootfs", "--offset", str(BOOT_START), str(path),
                    str(boot_sectors * SECTOR // 1024)], check=True, capture_output=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "rootfs", "-E", f"offset={root_start * SECTOR}", str(path),
                    f"{ROOT_SECTORS * SECTOR // 1024}k"], check=True, capture_output=True)
    files = {
        "cmdline.txt": "console=serial0,115200 console=tty1 root=PARTUUID=0b1e2a3c-02 rootfstype=ext4 fsck.repair=yes rootwait quiet\n",
        "config.txt": "# http://rptl.io/configtxt\ndtparam=audio=on\nauto_initramfs=1\narm_64bit=1\n",
        "issue.txt": issue,
        **{kernel: "kernel\n" for kernel in kernels},
    }
    if debian == "trixie":
        files |= {"user-data": "#cloud-config\n", "meta-data": "instance-id: rpios-image\n",
                  "network-config": "network:\n  version: 2\n"}
    staging = path.parent / f"{path.name}.files"
    staging.mkdir()
    for name, text in files.items():
        (staging / name).write_text(text)
        subprocess.run(["mcopy", "-i", f"{path}@@{BOOT_START * SECTOR}", str(staging / name), f"::/{name}"],
                       check=True, capture_output=True, env=mtools_env())
    shutil.rmtree(staging)
    return path


def root_bytes(image: Path) -> str:
    with image.open("rb") as f:
        f.seek(ROOT_START * SECTOR)
        return hashlib.sha256(f.read(ROOT_SECTORS * SECTOR)).hexdigest()


def build_cli(*args, env_extra: dict | None = None, path: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("M3SHD_")} | (env_extra or {})
    if path is not None:
        env["PATH"] = path
    return subprocess.run([sys.executable, "-m", "m3shd", "image", "build", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)


# --- the two first-boot mechanisms ----------------------------------------------------------------

def assert_built_for(wheels: list[str], python: str) -> None:
    """Compiled wheels are for the image's Python (or any CPython 3, abi3) on arm64."""
    compiled = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert compiled and all((f"-{python}-" in w or "-abi3-" in w) and "aarch64" in w for w in compiled), compiled


@pytest.mark.slow
@pytest.mark.image
@needs_tools
def test_a_trixie_image_gets_cloud_init_seed_files_and_the_offline_n0d3(tmp_path):
    base = make_base(tmp_path / "raspios-trixie-arm64-lite.img")
    before = root_bytes(base)
    key_file = tmp_path / "id_ed25519.pub"
    key_file.write_text(KEY + "\n")
    out = tmp_path / "out" / "n0d3.img"
    done = build_cli(base, "-o", out, "--url", "http://commander.lan:8470", "--join-token", "m3j_secret",
                     "--ssh-key", key_file, "--wifi", "home", "--wifi-country", "gb", "--capabilities", "gpu,room=kitchen",
                     env_extra={"M3SHD_WIFI_PASSPHRASE": PASSPHRASE})
    assert done.returncode == 0, done.stderr
    assert "first boot by cloud-init, Python 3.13" in done.stderr   # progress says what it found

    # Only the boot partition changed: same partition table, same root file system, byte for byte.
    assert partitions(out, out.name) == partitions(base, base.name)
    assert root_bytes(out) == before
    digest, name = (tmp_path / "out" / "n0d3.img.sha256").read_text().split()
    assert name == "n0d3.img" and digest == hashlib.sha256(out.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["n0d3.img", "n0d3.img.sha256"]  # no partials

    user_data = fat_read(out, "user-data")
    assert user_data.startswith("#cloud-config\n")
    seed = json.loads(user_data.split("\n", 1)[1])
    # As Raspberry Pi Imager writes it for Trixie: the default user renamed, keys only, sshd enabled.
    assert seed["user"] == {"name": "m3shd", "shell": "/bin/bash", "lock_passwd": True, "ssh_authorized_keys": [KEY],
                            "sudo": "ALL=(ALL) NOPASSWD:ALL"}
    assert seed["preserve_hostname"] is True and seed["ssh_pwauth"] is False
    assert seed["runcmd"] == [["systemctl", "enable", "--now", "ssh"],
                              ["sh", "-c", "echo 'm3shd ALL=(ALL) NOPASSWD:ALL' >/etc/sudoers.d/010_m3shd-nopasswd"],
                              ["chmod", "0440", "/etc/sudoers.d/010_m3shd-nopasswd"],
                              ["sh", "/boot/firmware/m3shd/firstboot.sh", "--start"]]
    assert json.loads(fat_read(out, "meta-data"))["instance-id"].startswith("m3shd-")
    assert fat_read(out, "cmdline.txt") == fat_read(base, "cmdline.txt")  # no firstrun hook here

    tree = fat_tree(out)
    # Wi-Fi goes in the payload, which the first boot takes off the card: the base's network-config,
    # which stays on it for good, is left as it was, with no key in it.
    assert fat_read(out, "network-config") == fat_read(base, "network-config")
    assert "firstrun.sh" not in tree and not any("ssh_host" in path for path in tree)
    assert f"psk={Wifi('home', PASSPHRASE, 'GB').psk()}\n" in fat_read(out, "m3shd/wifi.nmconnection")
    assert fat_read(out, "m3shd/wifi-country") == "GB\n"
    assert PASSPHRASE not in "".join(fat_read(out, p) for p in ("user-data", "m3shd/wifi.nmconnection", "m3shd/n0d3.toml"))
    settings = tomllib.loads(fat_read(out, "m3shd/n0d3.toml"))["n0d3"]
    assert settings == {"capabilities": ["board=pi5", "gpu", "room=kitchen"], "url": "http://commander.lan:8470",
                        "join_token": "m3j_secret"}
    assert fat_read(out, "m3shd/hostname") == "n0d3-{serial}\n"
    assert "ExecStart=/opt/m3shd/bin/m3shd n0d3 run" in fat_read(out, "m3shd/m3shd-n0d3.service")
    assert "ssh-keygen -A" in fat_read(out, "m3shd/firstboot.sh")
    wheels = [p.rsplit("/", 1)[1] for p in tree if p.startswith("m3shd/wheels/")]
    assert any(w.startswith("m3shd-") for w in wheels) and any(w.startswith("pip-") for w in wheels)
    assert_built_for(wheels, "cp313")


@pytest.mark.slow
@pytest.mark.image
@needs_tools
def test_a_bookworm_xz_image_gets_firstrun_and_the_cmdline_hook(tmp_path, m3shd_wheel):
    raw = make_base(tmp_path / "raspios-bookworm-arm64-lite.img", debian="bookworm")
    base = tmp_path / "raspios-bookworm-arm64-lite.img.xz"
    base.write_bytes(lzma.compress(raw.read_bytes(), preset=1))
    pinned = hashlib.sha256(base.read_bytes()).hexdigest()
    out = tmp_path / "n0d3.img.xz"
    done = build_cli(base, "-o", out, "--sha256", pinned, "--wheel", m3shd_wheel, "--user", "pi",
                     "--hostname", "kitchen-{serial}", "--wifi", "home", "--wifi-country", "DE",
                     "--ssh-key", write(tmp_path / "k.pub", KEY + "\n"),
                     env_extra={"M3SHD_WIFI_PASSPHRASE": PASSPHRASE})
    assert done.returncode == 0, done.stderr
    assert "first boot by firstrun, Python 3.11" in done.stderr
    assert (tmp_path / "n0d3.img.xz.sha256").read_text().split()[0] == hashlib.sha256(out.read_bytes()).hexdigest()
    img = tmp_path / "n0d3.img"
    img.write_bytes(lzma.decompress(out.read_bytes()))
    assert root_bytes(img) == root_bytes(raw)

    cmdline = fat_read(img, "cmdline.txt")
    assert cmdline == fat_read(raw, "cmdline.txt").strip() + (
        " systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot"
        " systemd.unit=kernel-command-line.target\n")
    assert "sh /boot/firmware/m3shd/firstboot.sh" in fat_read(img, "firstrun.sh")
    tree = fat_tree(img)
    assert "user-data" not in tree and "network-config" not in tree
    assert fat_read(img, "m3shd/user") == "pi\n" and fat_read(img, "m3shd/authorized_keys") == KEY + "\n"
    assert fat_read(img, "m3shd/hostname") == "kitchen-{serial}\n"
    wifi = fat_read(img, "m3shd/wifi.nmconnection")
    assert f"psk={Wifi('home', PASSPHRASE, 'DE').psk()}\n" in wifi and "ssid=104;111;109;101;\n" in wifi
    assert PASSPHRASE not in wifi
    settings = tomllib.loads(fat_read(img, "m3shd/n0d3.toml"))["n0d3"]
    assert settings == {"capabilities": ["board=pi5"]}   # no URL: mDNS; no token: pending approval
    assert "no --join-token" in done.stderr and "no --url" in done.stderr
    assert_built_for([p.rsplit("/", 1)[1] for p in tree if p.startswith("m3shd/wheels/")], "cp311")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- bad inputs: one clear line each, exit status 2, nothing left behind -------------------------

def shapes(tmp_path: Path) -> dict:
    """name → (base image path, expected words in the error)."""
    good = make_base(tmp_path / "good.img")
    text = write(tmp_path / "notes.img", "not a disk image at all\n" * 100)
    armhf = make_base(tmp_path / "armhf.img", kernels=("kernel7l.img", "kernel8.img"))
    debian = make_base(tmp_path / "debian.img", issue="Debian GNU/Linux 13\n")
    truncated = tmp_path / "truncated.img"
    truncated.write_bytes(good.read_bytes()[: (BOOT_START + 1000) * SECTOR])
    broken_xz = tmp_path / "broken.img.xz"
    packed = lzma.compress(good.read_bytes(), preset=0)
    broken_xz.write_bytes(packed[: len(packed) // 2])
    return {
        "text file": (text, "partition table"),
        "32-bit image": (armhf, "not an arm64 image"),
        "not Raspberry Pi OS": (debian, "not a Raspberry Pi OS image"),
        "truncated image": (truncated, "is truncated"),
        "truncated xz": (broken_xz, "does not decompress"),
        "missing file": (tmp_path / "nowhere.img", "no such base image"),
    }


@pytest.mark.slow
@pytest.mark.image
@needs_tools
def test_bad_inputs_get_one_clear_error_and_leave_nothing_behind(tmp_path):
    for label, (base, expected) in shapes(tmp_path).items():
        out_dir = tmp_path / f"out-{label.replace(' ', '-')}"
        done = build_cli(base, "-o", out_dir / "n0d3.img", "--join-token", "m3j_x")
        assert done.returncode == 2, (label, done.stderr)
        assert expected in done.stderr, (label, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("m3shd:")]
        assert "Traceback" not in done.stderr and len(errors) == 1 and base.name in errors[0], (label, done.stderr)
        assert not out_dir.exists() or not any(out_dir.iterdir()), label


@pytest.mark.slow
@pytest.mark.image
@needs_tools
def test_a_checksum_mismatch_a_bad_wheel_a_bad_output_and_an_already_built_image_are_refused(tmp_path, m3shd_wheel):
    base = make_base(tmp_path / "base.img")
    done = build_cli(base, "-o", tmp_path / "a.img", "--sha256", "0" * 64)
    assert done.returncode == 2 and "checksum mismatch" in done.stderr and "0" * 64 in done.stderr
    assert not list(tmp_path.glob("*a.img*"))
    not_a_wheel = build_cli(base, "-o", tmp_path / "w.img", "--wheel", write(tmp_path / "m3shd.whl", "text"))
    assert not_a_wheel.returncode == 2 and "m3shd.whl is not a wheel" in not_a_wheel.stderr
    onto_itself = build_cli(base, "-o", base)
    assert onto_itself.returncode == 2 and "is the base image" in onto_itself.stderr and base.exists()
    unwritable = build_cli(base, "-o", "/proc/n0d3.img")
    assert unwritable.returncode == 2 and "m3shd: /proc/n0d3.img: " in unwritable.stderr, unwritable.stderr
    built = tmp_path / "b.img"
    assert build_cli(base, "-o", built, "--wheel", m3shd_wheel).returncode == 0
    again = build_cli(built, "-o", tmp_path / "c.img", "--wheel", m3shd_wheel)
    assert again.returncode == 2 and "already been prepared" in again.stderr
    assert not list(tmp_path.glob("*c.img*"))


def claude_code_package(path: Path, name: str = "@anthropic-ai/claude-code-linux-arm64", version: str = "9.9.9",
                        padding: int = 0) -> Path:
    """An npm tarball shaped like Claude Code's native package (its binary a script here)."""
    staging = path.parent / f"{path.name}.files"
    (staging / "package").mkdir(parents=True)
    (staging / "package" / "package.json").write_text(json.dumps({"name": name, "version": version}))
    (staging / "package" / "claude").write_text(f"#!/bin/sh\necho '{version} (Claude Code)'\n")
    if padding:
        (staging / "package" / "padding").write_bytes(os.urandom(padding))  # does not compress
    with tarfile.open(path, "w:gz") as archive:
        archive.add(staging / "package", arcname="package")
    shutil.rmtree(staging)
    return path


@pytest.mark.slow
@pytest.mark.image
@needs_tools
def test_claude_code_goes_on_the_card_with_its_digest_and_a_wrong_or_too_large_package_is_refused(tmp_path,
                                                                                                   m3shd_wheel):
    base = make_base(tmp_path / "base.img", debian="bookworm")
    package = claude_code_package(tmp_path / "claude.tgz")
    out = tmp_path / "n0d3.img"
    done = build_cli(base, "-o", out, "--wheel", m3shd_wheel, "--claude-code-package", package)
    assert done.returncode == 0, done.stderr
    assert "Claude Code 9.9.9 goes on the image" in done.stderr
    assert {"m3shd/claude-code.tgz", "m3shd/claude-code.sha256"} <= set(fat_tree(out))
    digest = hashlib.sha256(package.read_bytes()).hexdigest()
    assert fat_read(out, "m3shd/claude-code.sha256") == f"{digest}  claude-code.tgz\n"
    assert "sha256sum -c" in fat_read(out, "m3shd/firstboot.sh")

    for label, wrong, expected in [
        ("another CPU's", claude_code_package(tmp_path / "x64.tgz", name="@anthropic-ai/claude-code-linux-x64"),
         "is @anthropic-ai/claude-code-linux-x64, not @anthropic-ai/claude-code-linux-arm64"),
        ("not a tarball", write(tmp_path / "notes.tgz", "text"), "is not an npm package tarball"),
        ("larger than the card's room", claude_code_package(tmp_path / "big.tgz", padding=70 << 20),
         "MB free and Claude Code needs"),
    ]:
        refused = build_cli(base, "-o", tmp_path / "r.img", "--wheel", m3shd_wheel, "--claude-code-package", wrong)
        assert refused.returncode == 2 and expected in refused.stderr, (label, refused.stderr)
        assert "Traceback" not in refused.stderr and not list(tmp_path.glob("*r.img*")), label


@needs_tools
def test_missing_tools_are_named_with_where_to_get_them(tmp_path):
    base = write(tmp_path / "base.img", "x" * 4096)
    done = build_cli(base, "-o", tmp_path / "out.img", path=str(tmp_path))   # a PATH with no tools on it
    assert done.returncode == 2 and "missing tools sfdisk" in done.stderr and "apt install mtools" in done.stderr
    assert not (tmp_path / "out.img").exists()


# --- what the person asks for is checked before anything is written --------------------------------

def test_the_wifi_key_is_the_standard_wpa_derivation():
    # IEEE 802.11i-2004 annex H.4 test vector.
    assert Wifi("IEEE", "password", "GB").psk() == "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"


@pytest.mark.parametrize("spec, words", [
    (Spec(user="Root Admin"), "user name"),
    (Spec(hostname="n0d3_{serial}"), "host name pattern"),
    (Spec(hostname="{serial}-{serial}"), "host name pattern"),
    (Spec(url="commander.lan:8470"), "Commander URL"),
    (Spec(url="https://commander.lan:8470", join_token="m3j_abc"), "whole join string"),
    (Spec(url="http://commander.lan:8470", join_token="m3j_abc#sha256:" + "0" * 64), "plain http"),
    (Spec(join_token="m3j_abc#sha256:beef"), "CA hash"),
    (Spec(ssh_keys=("hello",)), "not an SSH public key"),
    (Spec(wifi=Wifi("home", "short", "GB")), "8 to 63"),
    (Spec(wifi=Wifi("home", PASSPHRASE, "Britain")), "two-letter"),
])
def test_bad_settings_are_refused(spec, words):
    with pytest.raises(ImageError, match=words):
        spec.check()


def test_good_settings_pass():
    Spec(url="http://10.0.0.2:8470", user="pi", hostname="n0d3-{serial}", ssh_keys=(KEY,),
         wifi=Wifi("home", PASSPHRASE, "GB")).check()
    Spec(url="https://10.0.0.2:8470", join_token="m3j_abc#sha256:" + "0" * 64).check()


def test_help_explains_the_command():
    done = subprocess.run([sys.executable, "-m", "m3shd", "image", "build", "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    for words in ("Raspberry Pi OS Lite", "--sha256", "--join-token", "pending", "M3SHD_WIFI_PASSPHRASE", "{serial}"):
        assert words in done.stdout


def test_a_private_key_given_as_ssh_key_is_refused_without_echoing_it(tmp_path):
    secret_line = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
    private = write(tmp_path / "id_ed25519", f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret_line}\n"
                                             "-----END OPENSSH PRIVATE KEY-----\n")
    done = build_cli(write(tmp_path / "base.img", "x"), "-o", tmp_path / "out.img", "--ssh-key", private)
    assert done.returncode == 2 and "not an SSH public key" in done.stderr
    assert secret_line[:20] not in done.stderr and not (tmp_path / "out.img").exists()


def test_wifi_options_without_their_partner_are_refused(tmp_path):
    base = write(tmp_path / "base.img", "x")
    alone = build_cli(base, "-o", tmp_path / "out.img", "--wifi-country", "GB")
    assert alone.returncode == 2 and "--wifi-country needs --wifi" in alone.stderr
    no_country = build_cli(base, "-o", tmp_path / "out.img", "--wifi", "home")
    assert no_country.returncode == 2 and "--wifi needs --wifi-country" in no_country.stderr
    no_passphrase = build_cli(base, "-o", tmp_path / "out.img", "--wifi", "home", "--wifi-country", "GB")
    assert no_passphrase.returncode == 2 and "M3SHD_WIFI_PASSPHRASE" in no_passphrase.stderr   # never in argv
    assert not (tmp_path / "out.img").exists()
