"""eP-ALM: examples, fine-tuning and the checkpoint format (:mod:`.finetune`), evaluation
(:mod:`.evaluate`)."""
