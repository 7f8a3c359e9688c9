"""bert-beam's entry points, options, sources and sinks."""

from transforms import quiet_tensorflow

quiet_tensorflow.install()  # before any process running our code first imports TensorFlow
