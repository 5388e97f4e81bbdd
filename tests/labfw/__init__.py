"""A lab's own board firmware, written from docs/firmware-guide.md and docs/wire-protocol.md only."""
