"""Models and searcher files: encoders, training, export, the ScaNN on-device index builder.

Nothing here imports Apache Beam, and importing this package imports nothing heavy: TensorFlow
is imported only by the modules that need it, because tflite-support cannot share a process
with it (see models/compat.py).
"""
