"""Writing the job's outputs: ``WriteEmbeddings`` and ``WriteDeadLetters`` (``sinks``), the tf.Example and
Arrow encodings of the one feature table (``pipeline.schema``), and the shard sinks that sum up each
shard as they write it; ``example_keys`` reads ids back from tf.Example shards."""
