"""Repository root conftest.

The gate itself is the installed `pytest_trtparity` plugin (entry point `pytest11`); the repository's
defaults for its own gate (Silero VAD) are ini keys in pyproject.toml. This file only adds what the
plugin's own tests need.
"""

pytest_plugins = ("pytester",)
