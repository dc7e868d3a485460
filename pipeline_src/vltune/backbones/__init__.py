"""Backbones: the tokenizer and tiny CLIP/BART/T5 the pipeline pretrains itself (published ones load the same way)."""
