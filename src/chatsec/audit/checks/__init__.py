"""One module per check; the module name is the check id with '-' as '_'."""
