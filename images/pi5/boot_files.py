"""What goes on the boot partition: the N0D3's settings and the first-boot files for each mechanism.

cloud-init's files are written as JSON, which YAML reads as it is: no YAML library needed.
Everything secret (the join token, the Wi-Fi key) goes in the payload directory, which the first
boot removes from the card.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass

from images.pi5.tools import ImageError
from m3shd import trust

BOOT = "/boot/firmware"      # where Raspberry Pi OS (Bookworm and later) mounts the boot partition
PAYLOAD = "m3shd"            # our directory on it
FIRSTBOOT = f"{BOOT}/{PAYLOAD}/firstboot.sh"
FIRSTRUN_HOOK = ("systemd.run=/boot/firmware/firstrun.sh systemd.run_success_action=reboot "
                 "systemd.unit=kernel-command-line.target")

USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
COUNTRY = re.compile(r"[A-Z]{2}")


@dataclass(frozen=True)
class Wifi:
    ssid: str
    passphrase: str
    country: str

    def psk(self) -> str:
        """The WPA key derived from the passphrase (as wpa_passphrase does): the card carries this,
        never the passphrase, which people reuse elsewhere."""
        return hashlib.pbkdf2_hmac("sha1", self.passphrase.encode(), self.ssid.encode(), 4096, 32).hex()


@dataclass(frozen=True)
class Spec:
    """What the person asked for."""
    url: str = ""                       # "" → the N0D3 looks for the Commander on the LAN (mDNS)
    join_token: str = ""                # "" → it joins as pending, for the operator to approve
    user: str = "m3shd"
    hostname: str = "n0d3-{serial}"
    ssh_keys: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    wifi: Wifi | None = None

    def check(self) -> None:
        if not USER.fullmatch(self.user):
            raise ImageError(f"user name {self.user!r}: use lower-case letters, digits, - and _ (at most 32)")
        if self.hostname.count("{serial}") > 1 or not HOSTNAME.fullmatch(self.hostname.replace("{serial}", "0")) \
                or len(self.hostname.replace("{serial}", "0" * 8)) > 63:
            raise ImageError(f"host name pattern {self.hostname!r}: use lower-case letters, digits and -, "
                             f"with {{serial}} where the board's serial number goes")
        if self.url and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", self.url):
            raise ImageError(f"Commander URL {self.url!r}: expected http://HOST:PORT or https://…")
        self.check_pin()
        for key in self.ssh_keys:
            if not re.fullmatch(r"(ssh|ecdsa|sk)-\S+ \S+( .*)?", key) or "\n" in key:
                raise ImageError(f"not an SSH public key: {key[:40]!r}")
        if self.wifi:
            if not 1 <= len(self.wifi.ssid.encode()) <= 32:
                raise ImageError("Wi-Fi SSID: 1 to 32 bytes")
            if not 8 <= len(self.wifi.passphrase) <= 63:
                raise ImageError("Wi-Fi passphrase: 8 to 63 characters (WPA2)")
            if not COUNTRY.fullmatch(self.wifi.country):
                raise ImageError(f"Wi-Fi country {self.wifi.country!r}: a two-letter code such as GB or US")


    def check_pin(self) -> None:
        """An https:// Commander is trusted by the CA hash its join string carries (m3shd/trust.py);
        the N0D3 on the card would refuse to join otherwise, unseen, at first boot."""
        try:
            _, pinned = trust.split_join(self.join_token)
        except ValueError as exc:
            raise ImageError(str(exc)) from None
        if self.url.startswith("https://") and self.join_token and not pinned:
            raise ImageError("an https:// Commander needs the whole join string, m3j_…#sha256:…, which "
                             "`m3shd token create NAME --kind join` prints: its hash pins the Commander's CA")
        if pinned and self.url.startswith("http://"):
            raise ImageError("the join string pins the Commander's CA, but the URL is plain http://: use its https:// URL")


def node_settings(spec: Spec) -> dict:
    """The [n0d3] section of /etc/m3shd/n0d3.toml on the device."""
    values = {"capabilities": ["board=pi5", *spec.capabilities]}
    if spec.url:
        values["url"] = spec.url
    if spec.join_token:
        values["join_token"] = spec.join_token
    return values


def cmdline_with_firstrun(cmdline: str) -> str:
    """cmdline.txt is one line; the hook goes at its end, where firstrun.sh cuts it off again."""
    return f"{cmdline.strip()} {FIRSTRUN_HOOK}\n"


def cloud_init(spec: Spec) -> dict[str, str]:
    """NoCloud seed files, user-data as Raspberry Pi Imager writes it for Trixie (its
    customization_generator.cpp): the singular `user:`, which keeps Raspberry Pi OS's default
    user's groups; keys only; and sshd enabled by runcmd, since cloud-init's ssh module writes keys
    but Raspberry Pi OS ships sshd off. Then firstboot.sh does the rest, Wi-Fi included (the
    NetworkManager file in the payload, as on Bookworm: so the key leaves the card with the payload;
    a `network-config` here would stay on it for good)."""
    sudoers = f"/etc/sudoers.d/010_{spec.user}-nopasswd"
    user_data = {
        "preserve_hostname": True,            # firstboot.sh names the host from the board's serial
        "user": {"name": spec.user, "shell": "/bin/bash", "lock_passwd": True,
                 "ssh_authorized_keys": list(spec.ssh_keys), "sudo": "ALL=(ALL) NOPASSWD:ALL"},
        "ssh_pwauth": False,
        "runcmd": [*([["systemctl", "enable", "--now", "ssh"]] if spec.ssh_keys else []),
                   ["sh", "-c", f"echo '{spec.user} ALL=(ALL) NOPASSWD:ALL' >{sudoers}"],
                   ["chmod", "0440", sudoers],
                   ["sh", FIRSTBOOT, "--start"]],
    }
    return {
        "user-data": "#cloud-config\n" + json.dumps(user_data, indent=2) + "\n",
        # A fresh instance id: cloud-init runs once per instance, so each build is a new one.
        "meta-data": json.dumps({"instance-id": f"m3shd-{secrets.token_hex(8)}"}, indent=2) + "\n",
        **wifi_files(spec),
    }


def firstrun(spec: Spec) -> dict[str, str]:
    """What firstboot.sh reads on Bookworm, where it also makes the user."""
    return {f"{PAYLOAD}/user": spec.user + "\n",
            f"{PAYLOAD}/authorized_keys": "".join(key + "\n" for key in spec.ssh_keys), **wifi_files(spec)}


def wifi_files(spec: Spec) -> dict[str, str]:
    """The Wi-Fi connection for firstboot.sh to install into the root file system (0600); it
    leaves the card with the rest of the payload."""
    if not spec.wifi:
        return {}
    return {f"{PAYLOAD}/wifi-country": spec.wifi.country + "\n",
            f"{PAYLOAD}/wifi.nmconnection": nm_connection(spec.wifi)}


def nm_connection(wifi: Wifi) -> str:
    """A NetworkManager keyfile (Bookworm's network stack); the SSID goes in as bytes, so any
    character is safe."""
    ssid = ";".join(str(b) for b in wifi.ssid.encode()) + ";"
    return ("[connection]\nid=m3shd-wifi\ntype=wifi\nautoconnect=true\n\n"
            f"[wifi]\nmode=infrastructure\nssid={ssid}\n\n"
            f"[wifi-security]\nkey-mgmt=wpa-psk\npsk={wifi.psk()}\n\n"
            "[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n")
