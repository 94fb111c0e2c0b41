"""BioCodec Bench core: image I/O, codecs, metrics, results store and the batch runner."""
