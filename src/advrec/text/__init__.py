"""Pretrained text models as features: a cached sentence encoder, builders of item and user text, and contrastive
fine-tuning of the encoder on which items follow each other in histories."""

from advrec.text.encoder import SentenceEncoder
from advrec.text.finetune import cooccurrence_pairs, finetune_encoder
from advrec.text.item_text import columns_text, encode_items, item_texts, movie_text, user_texts

__all__ = [
    "SentenceEncoder",
    "columns_text",
    "cooccurrence_pairs",
    "encode_items",
    "finetune_encoder",
    "item_texts",
    "movie_text",
    "user_texts",
]
