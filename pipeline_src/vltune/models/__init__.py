"""Model wrappers around transformers backbones (VL-BART; later VLMo and eP-ALM)."""
