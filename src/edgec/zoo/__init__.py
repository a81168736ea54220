"""Model zoo: ``get(name)``, ``list_models()``, ``create_model(name, ...)``."""

from edgec.zoo import models as _models  # noqa: F401  registers the entries
from edgec.zoo.registry import ZooEntry, create_model, get, list_models

__all__ = ["ZooEntry", "create_model", "get", "list_models"]
