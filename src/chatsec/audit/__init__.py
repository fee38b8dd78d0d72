"""`chatsec audit`: prove against a live database that the declared security is in force.

Checks live one per module in chatsec.audit.checks (adding a check = adding a file);
the registry finds them, the runner runs them on the auditor's connection, and the
report package renders the results as text, JSON, JUnit or SARIF.
"""
