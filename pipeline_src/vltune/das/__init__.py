"""DAS (Dynamic Architecture Skipping, NeurIPS 2023, https://arxiv.org/abs/2309.01479): the skip
search over encoder blocks (``search.py``) and the weight-sharing supernet it trains
(``supernet.py``). The skipped model itself is the ``das`` PET method (``vltune.pet.das``)."""

from .search import SearchConfig, SkipPolicy, run_search
from .supernet import SkippableBlock, build_supernet, set_skipped

__all__ = ["SearchConfig", "SkipPolicy", "run_search", "SkippableBlock", "build_supernet", "set_skipped"]
