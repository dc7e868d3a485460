"""Per-model-family study code on top of the engine: each family's tasks and data, fine-tuning,
evaluation and checkpoint format (:mod:`.encdec`: VL-BART / VL-T5; :mod:`.vlmo`: VLMo;
:mod:`.epalm`: eP-ALM), and the parameter planner of ``vltune params`` (:mod:`.planner`)."""
