"""VLMo (the merging study): task data (:mod:`.data`), pretraining and the backbone format
(:mod:`.pretrain`), per-task fine-tuning, evaluation and Gram matrices (:mod:`.tasks`)."""
