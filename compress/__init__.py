"""slimformer: make Transformer text classifiers small and fast.

`compress` holds the library: the model, data, training loop, compression steps and export.
"""

__version__ = "0.1.0"
