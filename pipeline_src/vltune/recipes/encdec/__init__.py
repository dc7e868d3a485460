"""VL-BART / VL-T5 (VL-PET): the task mix and its batches (:mod:`.tasks`), multitask fine-tuning and
the checkpoint format (:mod:`.finetune`), per-task evaluation (:mod:`.evaluate`)."""
