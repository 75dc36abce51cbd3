#!/bin/sh
# Run once from the kernel command line (systemd.run=) on Bookworm-based images; the system
# reboots when it exits. The hook comes off cmdline.txt whatever happens, so a failure cannot
# loop; the log stays in /var/log for a person to read.
sh /boot/firmware/m3shd/firstboot.sh > /var/log/m3shd-firstboot.log 2>&1
rm -f /boot/firmware/firstrun.sh
sed -i 's| systemd\.run.*||' /boot/firmware/cmdline.txt
exit 0
