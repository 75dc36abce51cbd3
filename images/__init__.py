"""Builders for machine images that join the mesh on first boot (the Pi 5 one is images.pi5)."""
