"""Framework integrations: probes, device packing and callbacks.

Each framework module imports its framework (``torch``, ``keras``,
``lightning``); this package itself imports none, so that the package root
can route a model to the right one (:mod:`._dispatch`).
"""
