"""nanowhale's data pipeline: tokenizer, token shards, loader and the `nanowhale data` commands."""

from nanowhale.data.tokenizer import SPLIT_PATTERN, Tokenizer, default_special_tokens, to_tiktoken, train_tokenizer

__all__ = ["SPLIT_PATTERN", "Tokenizer", "default_special_tokens", "to_tiktoken", "train_tokenizer"]
