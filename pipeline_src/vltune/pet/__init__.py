"""Parameter-efficient transfer learning methods, one registry, injected by module-name patterns.

``apply_pet(model, "vlpet-large")`` (or a dict ``{"method": ..., <hyper-parameter>: ...}``) freezes
the model, adds the method's layers and marks what trains; ``save_pet``/``load_pet`` write and read
only the trainable tensors + the config. Importing this package registers every method.
"""

from . import adapter, das, epalm, lora, prompt, selective, vlpet  # noqa: F401  (registers the methods)
from .base import (
    MODEL_KINDS,
    PET_METHODS,
    PetConfig,
    apply_pet,
    count_parameters,
    get_method,
    method_names,
    pet_config_dict,
    resolve_config,
    trainable_state_dict,
)
from .io import PET_CONFIG, PET_WEIGHTS, is_pet_dir, load_pet, save_pet
from .targets import FAMILIES, Family, Site

__all__ = [
    "MODEL_KINDS", "PET_METHODS", "PetConfig", "apply_pet", "count_parameters", "get_method", "method_names",
    "pet_config_dict", "resolve_config", "trainable_state_dict", "PET_CONFIG", "PET_WEIGHTS",
    "is_pet_dir", "load_pet", "save_pet", "FAMILIES", "Family", "Site",
]
