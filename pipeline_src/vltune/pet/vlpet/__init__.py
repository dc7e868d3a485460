"""VL-PET: ``vlpet-small``, ``vlpet-middlex``, ``vlpet-middley``, ``vlpet-large`` (one implementation,
four gate granularities; layers in ``.layer``, injection in ``.inject``)."""

from ..config import register_method
from .config import GATE_OF_METHOD, VLPetConfig

__all__ = ["VLPetConfig", "GATE_OF_METHOD"]

_PRETTY = {"large": "VL-PET-large", "middlex": "VL-PET-middleX", "middley": "VL-PET-middleY", "small": "VL-PET-small"}
for _name, _gate in GATE_OF_METHOD.items():
    register_method(_name, VLPetConfig, "vltune.pet.vlpet.inject:inject_vlpet", pretty_name=_PRETTY[_gate],
                    paper="https://arxiv.org/abs/2308.09804")
