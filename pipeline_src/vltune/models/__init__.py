"""Model wrappers around transformers backbones (VL-BART, VL-T5; later VLMo and eP-ALM)."""
