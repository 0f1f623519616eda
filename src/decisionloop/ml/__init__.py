"""Models in the loop: point-in-time training sets, training, a model registry and serving.

``training`` builds frames from the source layer, ``train`` fits and evaluates estimators,
``registry`` keeps versions under ``<project>/models/``, ``walker`` and ``serving`` score one
event inside the decision path. See docs/models.md.
"""
