"""Client commands of one feature each (`register(line)`), added to `m3shd` by m3shd/cli.py."""
