"""Client commands of one feature each, `register(line)` called from m3shd/cli.py."""
