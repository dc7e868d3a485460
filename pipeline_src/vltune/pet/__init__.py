"""Parameter-efficient transfer learning methods, one registry, injected by module-name patterns.

``apply_pet(model, "vlpet-large")`` (or a dict ``{"method": ..., <hyper-parameter>: ...}``) freezes
the model, adds the method's layers and marks what trains; ``save_pet``/``load_pet`` write and read
only the trainable tensors + the config. Importing this package registers every method and imports
no torch: the registry and configs are all the workflow needs when it plans, and the torch side
(``apply_pet`` and the rest below) is imported on first use.
"""

from importlib import import_module

from . import adapter, das, epalm, lora, prompt, selective, vlpet  # noqa: F401  (registers the methods)
from .config import MODEL_KINDS, PET_METHODS, PetConfig, get_method, method_names, pet_config_dict, resolve_config

_TORCH_SIDE = {
    **dict.fromkeys(("apply_pet", "count_parameters", "trainable_state_dict"), ".base"),
    **dict.fromkeys(("PET_CONFIG", "PET_WEIGHTS", "is_pet_dir", "load_pet", "save_pet"), ".io"),
    **dict.fromkeys(("FAMILIES", "Family", "Site"), ".targets"),
}

__all__ = ["MODEL_KINDS", "PET_METHODS", "PetConfig", "get_method", "method_names", "pet_config_dict",
           "resolve_config", *_TORCH_SIDE]


def __getattr__(name: str):
    if name in _TORCH_SIDE:
        return getattr(import_module(_TORCH_SIDE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
