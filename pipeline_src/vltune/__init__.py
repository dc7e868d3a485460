"""vltune: parameter- and computation-efficient transfer learning of vision-language models."""

__version__ = "0.1.0"
