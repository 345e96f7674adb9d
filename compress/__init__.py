"""slimformer: make Transformer text classifiers small and fast.

`compress` holds the library: the model, data, training loop, compression steps and export.
Importing it registers slimformer's model types with transformers' Auto classes, so
`AutoModelForSequenceClassification.from_pretrained(stage_folder)` loads any saved stage
without `trust_remote_code` once `import compress` has run (a folder also carries its model
code, for machines where slimformer is not installed: there, pass `trust_remote_code=True`).
"""

__version__ = "0.1.0"

from compress.models import register_auto_classes  # noqa: E402

register_auto_classes()
