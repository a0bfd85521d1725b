"""`claude` for the tests: tests/fake_claude.py run from its bytecode. Python compiles a script at
every start but loads an imported module's cached .pyc, and the suite starts the fake a thousand
times (conftest.py compiles it once per session)."""

import fake_claude

fake_claude.cli()
