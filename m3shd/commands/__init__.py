"""The client commands of `m3shd`, one module per group, each a client of the Commander API.

Every module exposes `register(line: CommandLine)`, called from m3shd/cli.py, which keeps the
helpers they share (say, CliError and the exit statuses, emit, for_terminal, api, read_json).
"""
