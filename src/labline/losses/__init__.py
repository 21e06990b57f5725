"""Losses that torch does not provide in the form labline's configs need.

Every loss has a ``target`` attribute naming the label encoding it compares
its outputs with (see ``labline.losses.labels``); plain torch losses reach configs
through ``labline.losses.torch_loss.TorchLoss``.
"""
