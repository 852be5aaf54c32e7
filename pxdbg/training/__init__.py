"""Training of the generator models (``pxdbg train``).

- :mod:`.trainer`: :class:`~.trainer.TrainConfig`, :class:`~.trainer.Trainer`, :func:`~.trainer.train`
- :mod:`.losses`: WGAN-GP, hinge, 2C, IEA KL, uniformity, orthogonal regularisation
- :mod:`.discriminators`: WGAN-GP critic and the IEA-GAN discriminator
- :mod:`.diffaugment`, :mod:`.ema`, :mod:`.data` (training sample in canonical sensor order),
  :mod:`.state` (resumable training state without pickle)
"""
