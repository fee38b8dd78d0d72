"""The `chatsec` command line: thin click commands over chatsec's importable modules."""
