"""Repository root conftest.

The gate itself is the installed `pytest_trtparity` plugin (entry point `pytest11`); the repository's
defaults for its own gate (Silero VAD) are ini keys in pyproject.toml, and the plugin's own tests get
`pytester` from `addopts` there. This file defines nothing: in an editable install the bundled suites
are this repository's `suites/`, so pytest loads this file into users' gate runs too, where a
`pytest_plugins` here would be an error (pytest refuses it outside the rootdir's top level).
"""
