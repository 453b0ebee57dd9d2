"""Pretrained text models as features: a cached sentence encoder and builders of item and user text."""

from advrec.text.encoder import SentenceEncoder
from advrec.text.item_text import columns_text, encode_items, item_texts, movie_text, user_texts

__all__ = ["SentenceEncoder", "columns_text", "encode_items", "item_texts", "movie_text", "user_texts"]
