"""The vector index port and its embedded adapter."""
