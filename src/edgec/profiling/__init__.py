"""Running artifacts (locally, emulated, over RPC), timing, memory and reports."""
