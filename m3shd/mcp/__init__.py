"""The mesh as an MCP server for Claude Code and Claude Desktop: `m3shd mcp`.

A client of the Commander API like the CLI and the bridge; it keeps no state of its own.
Needs the `mcp` extra (`pip install 'm3shd[mcp]'`).
"""
