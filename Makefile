.PHONY: demo test install

install:
	bash .ci/install

# The whole tool end to end on a local sandbox (installs what is missing first).
demo: install
	.venv/bin/chatsec demo

# Lint, type-check and the full test suite against real PostgreSQL.
test:
	bash .ci/run
