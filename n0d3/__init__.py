"""The N0D3 agent: runs tasks from the Commander on this machine."""
