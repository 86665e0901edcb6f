"""Peer programs the harness ships itself (where no off-the-shelf tool reaches a server)."""
