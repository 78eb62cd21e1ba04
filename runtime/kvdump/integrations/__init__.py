"""Integrations of kvdump with model frameworks, one submodule per framework.

Each submodule imports its framework when it is itself imported (``import
kvdump.integrations.transformers`` needs ``transformers``); neither ``import kvdump`` nor this package
imports any of them, so kvdump works without those frameworks installed.
"""
