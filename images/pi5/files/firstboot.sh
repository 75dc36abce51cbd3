#!/bin/sh
# First boot of a M3SHD Pi 5 image, run once as root: by cloud-init's runcmd on Trixie-based
# images (with --start: systemd is up, so the N0D3 starts now), by firstrun.sh from the kernel
# command line on Bookworm-based ones (the N0D3 starts after the reboot that follows).
# Everything it reads sits next to it on the boot partition; values are read from files, never
# pasted into this script.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
say() { echo "m3shd first boot: $*"; }

# A unique host name from the board's serial number (a container has none: its machine id).
serial=""
if [ -r /sys/firmware/devicetree/base/serial-number ]; then
    serial=$(tr -d '\000' < /sys/firmware/devicetree/base/serial-number)
fi
[ -n "$serial" ] || serial=$(sed -n 's/^Serial[[:space:]]*: *//p' /proc/cpuinfo)
[ -n "$serial" ] || serial=$(cat /etc/machine-id)
serial=$(printf '%s' "$serial" | tr -cd '0-9a-f' | tail -c 8)
name=$(sed "s/{serial}/$serial/" "$here/hostname")
echo "$name" > /etc/hostname
if grep -qs '^127\.0\.1\.1' /etc/hosts; then
    sed -i "s/^127\.0\.1\.1.*/127.0.1.1\t$name/" /etc/hosts
else
    printf '127.0.1.1\t%s\n' "$name" >> /etc/hosts
fi
hostname "$name" 2>/dev/null || true
say "host name $name"

# SSH host keys are made here, on the device: an image never carries any.
rm -f /etc/ssh/ssh_host_*
ssh-keygen -A
say "SSH host keys generated"

# The login user and its keys (cloud-init made them already on Trixie).
if [ -f "$here/user" ]; then
    user=$(cat "$here/user")
    id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash --groups sudo "$user"
    usermod --lock "$user"
    install -d -m 700 -o "$user" -g "$user" "/home/$user/.ssh"
    install -m 600 -o "$user" -g "$user" "$here/authorized_keys" "/home/$user/.ssh/authorized_keys"
    printf '%s ALL=(ALL) NOPASSWD:ALL\n' "$user" > /etc/sudoers.d/010_m3shd-user
    chmod 440 /etc/sudoers.d/010_m3shd-user
    # Bookworm's first-boot user wizard and its SSH lock-out are for images without a user.
    systemctl disable userconfig.service 2>/dev/null || true
    rm -f /etc/ssh/sshd_config.d/rename_user.conf
    if [ -s "$here/authorized_keys" ]; then systemctl enable ssh 2>/dev/null || true; fi
    say "user $user"
fi

# Wi-Fi: NetworkManager's connection, readable by root alone, in the root file system (the card's
# copy goes with the payload below). On Trixie NetworkManager runs already: it is told to look.
if [ -f "$here/wifi.nmconnection" ]; then
    install -D -m 600 -o root -g root "$here/wifi.nmconnection" \
        /etc/NetworkManager/system-connections/m3shd-wifi.nmconnection
    if command -v raspi-config >/dev/null; then raspi-config nonint do_wifi_country "$(cat "$here/wifi-country")"; fi
    if [ "${1:-}" = --start ] && command -v nmcli >/dev/null; then nmcli connection reload || true; fi
    say "Wi-Fi configured"
fi

# Claude Code, when the image carries it (m3shd image build --claude-code): its native binary,
# checked against the digest the builder wrote, read-only to the N0D3.
if [ -f "$here/claude-code.tgz" ]; then
    (cd "$here" && sha256sum -c --quiet claude-code.sha256)
    install -d -m 755 /opt/claude-code
    tar -xzf "$here/claude-code.tgz" -C /opt/claude-code --strip-components=1 package/claude
    chmod 755 /opt/claude-code/claude
    ln -sf /opt/claude-code/claude /usr/local/bin/claude
    say "Claude Code $(/opt/claude-code/claude --version 2>/dev/null || echo '(version unknown)') installed"
fi

# The N0D3, offline from the wheels here, in its own venv, as its own user.
python3 -m venv --without-pip /opt/m3shd
pip_wheel=$(ls "$here"/wheels/pip-*.whl)
/opt/m3shd/bin/python "$pip_wheel/pip" install --quiet --no-index --find-links "$here/wheels" 'm3shd[n0d3]'
id m3shd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/m3shd --shell /usr/sbin/nologin m3shd
install -d -m 750 -o root -g m3shd /etc/m3shd
install -m 640 -o root -g m3shd "$here/n0d3.toml" /etc/m3shd/n0d3.toml
install -m 644 "$here/m3shd-n0d3.service" /etc/systemd/system/m3shd-n0d3.service
systemctl enable m3shd-n0d3.service
if [ "${1:-}" = --start ]; then
    systemctl daemon-reload
    systemctl start --no-block m3shd-n0d3.service
    systemctl try-restart ssh 2>/dev/null || true
fi
say "N0D3 installed"

# Anyone holding the card can read the FAT partition: the join token and the Wi-Fi key leave it now.
rm -rf "$here"
say "done"
