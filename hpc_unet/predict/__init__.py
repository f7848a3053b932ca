"""Use a study's models: ``hpc-unet predict`` (segment images with one model) and ``hpc-unet evaluate``
(score a study's models and ensembles on a dataset).

Submodules: ``metadata`` (what a ``.keras`` file carries; no TensorFlow), ``tiles`` (sliding window with
Gaussian blending; NumPy), ``images`` (reading inputs, writing masks and overlays), ``scores`` (IoU/Dice and
bootstrap intervals), ``engine`` (loading models and predicting; imports TensorFlow) and ``evaluate``.
"""
