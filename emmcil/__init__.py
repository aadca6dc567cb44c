"""emmcil: Exemplar Masking for Multimodal (class-)Incremental Learning, a reproduction of arXiv 2412.09549."""
__version__ = "0.1.0"
