"""The packages of the wheel (the rest of the metadata is in pyproject.toml).

lua/ at the repository's top is the Redis scripts' source; the wheel carries it as the package data
of ``app.lua``, where app/store/script_sources.py reads it. pyproject.toml's package discovery can't
add a package that has no folder of that name, hence this file.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["app", "app.*"]), "app.lua"],
    package_dir={"app.lua": "lua"},
    package_data={"app.lua": ["*.lua"], "app.control": ["status.html"]},
)
