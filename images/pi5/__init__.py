"""The flashable Raspberry Pi 5 image: a Raspberry Pi OS Lite (arm64) image whose FAT boot
partition carries the N0D3 (wheels, config, systemd unit) and a first-boot hook that installs it.

Modules: `tools` runs the external programs, `disk` reads partition tables and the FAT boot
partition, `base` checks the input is a Raspberry Pi OS arm64 image and which first-boot
mechanism it uses, `wheels` gathers the arm64 wheelhouse, `boot_files` renders what goes on the
boot partition, `build` puts it all together (`m3shd image build`).
"""
