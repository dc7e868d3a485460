"""Backbones: the tokenizer and tiny CLIP/BART the pipeline pretrains itself (published ones load the same way)."""
