"""bert-beam's Beam transforms and the rules they apply."""

from transforms import quiet_tensorflow

quiet_tensorflow.install()  # before any process running our code first imports TensorFlow
