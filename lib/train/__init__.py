"""Training: the models, the training loop, the augmentations (salt-and-pepper, PixMix).

Imports from lib.data only (never from lib.evaluate or lib.report).
"""
