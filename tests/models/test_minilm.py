"""all-MiniLM-L6-v2 in plain PyTorch (models/minilm.py) and the multitask model's MiniLM text extractor."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moodlake.models import get_model
from moodlake.models.minilm import WordPiece, convert_state_dict, minilm, minilm_dir
from moodlake.models.multitask import MiniLMText

ALPHABET = ["<PAD>", "<UNK>", *"abcdefghijklmnopqrstuvwxyz !.,'"]


def minilm_tokenizer() -> tuple[WordPiece, list[str]]:
    vocab = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return WordPiece(vocab), vocab


def chars_of(texts: list[str]) -> torch.Tensor:
    rows = [[ALPHABET.index(c) if c in ALPHABET else 1 for c in t] for t in texts]
    width = max(map(len, rows))
    return torch.tensor([r + [0] * (width - len(r)) for r in rows])


def test_wordpiece_follows_bert_uncased_rules():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "cafe", "!", ",", "hello", "東"]
    tok = WordPiece(vocab, max_tokens=8)
    ids = tok.tokenize("UNAFFABLE, Café!! hello東 zzz")
    assert [vocab[i] for i in ids] == ["[CLS]", "un", "##aff", "##able", ",", "cafe", "!", "[SEP]"]  # truncated
    tok.max_tokens = 32
    assert [vocab[i] for i in tok.tokenize("hello東 zzz")] == ["[CLS]", "hello", "東", "[UNK]", "[SEP]"]
    ids, mask = tok.encode_batch(["hello", "hello hello hello"])
    assert ids.shape == mask.shape == (2, 5) and mask.sum(1).tolist() == [3, 5] and ids[0, 3:].tolist() == [0, 0]


def test_wordpiece_on_the_real_vocabulary_by_hand():
    tok, vocab = minilm_tokenizer()
    # ids are vocab.txt line numbers - 1: "hello" is line 7593; "unaffable": the longest piece that starts
    # it is "una", then "##ffa" ("##ffable", "##ffab", "##ffabl" are not in the vocabulary), then "##ble";
    # a literal "[CLS]" is split like any word
    ids = tok.tokenize("Héllo, WORLD!! 東京 unaffable [CLS]")
    assert [vocab[i] for i in ids] == ["[CLS]", "hello", ",", "world", "!", "!", "東", "京", "una", "##ffa",
                                                "##ble", "[", "cl", "##s", "]", "[SEP]"]
    assert ids == [101, 7592, 1010, 2088, 999, 999, 1879, 1755, 14477, 20961, 3468, 1031, 18856, 2015, 1033, 102]
    # a word past 100 characters and one the vocabulary cannot cover are one [UNK] each
    assert tok.tokenize("x" * 101 + " 😍 x") == [101, 100, 100, 1060, 102]
    assert tok.tokenize("") == [101, 102] and tok.tokenize("a\ud800b") == tok.tokenize("ab")  # lone surrogate dropped
    long = tok.tokenize("hello " * 200)
    assert len(long) == 128 and long[0] == 101 and long[-1] == 102 and set(long[1:-1]) == {7592}
    ids, mask = tok.encode_batch(["hi", "a b c", ""])
    assert ids.tolist() == [[101, 7632, 102, 0, 0], [101, 1037, 1038, 1039, 102], [101, 102, 0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
    assert tuple(tok.encode_batch([])[0].shape) == (0, 2)


@pytest.mark.data
def test_wordpiece_gives_the_pure_python_ids_on_real_comments(shared_data):
    """The same ids as the pure-Python port it replaced (the benchmark's baseline) on GoEmotions' dev
    comments, and the invariants of a padded batch."""
    from moodlake_dev.bench.tokenizer import PurePythonWordPiece, goemotions_texts

    tok, vocab = minilm_tokenizer()
    texts = goemotions_texts(shared_data)[-5426:]  # the dev split comes last
    baseline = PurePythonWordPiece(vocab)
    for start in range(0, len(texts), 256):
        chunk = texts[start:start + 256]
        ids, mask = tok.encode_batch(chunk)
        want_ids, want_mask = baseline.encode_batch(chunk)
        assert torch.equal(ids, want_ids) and torch.equal(mask, want_mask), start
        lengths = mask.sum(1)
        assert (ids[:, 0] == tok.cls).all() and (ids[torch.arange(len(chunk)), lengths - 1] == tok.sep).all()
        assert ((ids == tok.pad) == (mask == 0)).all() and ids.shape[1] == lengths.max() <= 128
        assert [ids[i, :n].tolist() for i, n in enumerate(lengths.tolist())] == [tok.tokenize(t) for t in chunk]


def test_pretrained_sentence_embeddings_put_paraphrases_together():
    tok, enc = minilm()
    enc.eval()
    texts = ["I am so happy today, this is wonderful", "What a great and joyful day, I love it",
             "The invoice must be paid by the end of the month", "Please settle the bill before the month ends"]
    ids, mask = tok.encode_batch(texts)
    with torch.no_grad():
        e = enc.sentence_embedding(ids, mask)
    sim = e @ e.T
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[2, 3] > sim[1, 3] + 0.2
    # padding does not change a text's vectors: alone vs. in a batch with a longer text
    alone = enc.sentence_embedding(*tok.encode_batch(texts[2:3]))
    assert torch.allclose(alone, e[2:3], atol=1e-5)


def test_checkpoint_names_are_converted_or_refused():
    state = {"embeddings.word_embeddings.weight": torch.zeros(1), "pooler.dense.weight": torch.zeros(1),
             "encoder.layer.3.attention.self.query.bias": torch.zeros(1)}
    assert sorted(convert_state_dict(state)) == ["layers.3.query.bias", "word_embeddings.weight"]
    with pytest.raises(ValueError, match="unexpected tensor"):
        convert_state_dict({"encoder.layer.0.crossattention.x.weight": torch.zeros(1)})


def test_frozen_layers_cache_gives_the_same_features_and_gradients():
    torch.manual_seed(0)
    plain = MiniLMText(ALPHABET, pretrained=False, trainable_layers=1)
    cached = MiniLMText(ALPHABET, pretrained=False, trainable_layers=1)
    cached.load_state_dict(plain.state_dict())
    cached.cache_frozen(2**30)
    for m in (plain, cached):
        m.eval()  # no dropout: the two must compute the same numbers
    first, second = chars_of(["i love it", "so sad."]), chars_of(["so sad.", "what a day, wow", "i love it"])
    cached(first)
    out_plain, out_cached = plain(second), cached(second)
    assert (cached.cache_hits, cached.cache_misses) == (2, 3)
    assert torch.allclose(out_plain, out_cached, atol=1e-5)
    for m, out in ((plain, out_plain), (cached, out_cached)):
        out.square().sum().backward()
    top = [p.grad for p in cached.encoder.layers[-1].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in top)
    assert all(p.grad is None for p in cached.encoder.layers[0].parameters())  # frozen
    for a, b in zip(plain.encoder.layers[-1].parameters(), cached.encoder.layers[-1].parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6)


def test_multitask_model_reads_text_from_chars_and_slows_the_encoder_down():
    model = get_model("multitask", labels=["negative", "positive"], vocab_size=5, tag_vocab_size=5,
                      text_encoder="minilm", char_alphabet=ALPHABET, text_trainable_layers=2, pretrained=False)
    batch = {"chars": chars_of(["i love it!", "awful."]), "mask": torch.tensor([[False, True, False]] * 2),
             "label": torch.tensor([1, 0])}
    assert model.extractors["text"].texts(batch["chars"]) == ["i love it!", "awful."]
    out = model(batch)
    assert out["text"].shape == (2, 2) and out["text"].abs().sum() > 0 and out["image"].abs().sum() == 0
    fast, slow = model.param_groups(1e-3)
    assert slow["lr"] == pytest.approx(5e-5) and fast["lr"] == 1e-3
    assert len(slow["params"]) == 2 * 16  # two transformer layers of 16 tensors
    with pytest.raises(ValueError, match="char_alphabet"):
        get_model("multitask", num_classes=2, vocab_size=5, tag_vocab_size=5, text_encoder="minilm", pretrained=False)


def test_tokenizer_and_encoder_match_hugging_face_on_the_same_weights():
    """Reference numbers from transformers' BertTokenizerFast and BertModel on the same weight files
    (tests/models/reference/make_minilm_reference.py wrote them; the project does not depend on
    transformers): the same word pieces, and vectors equal to float32 rounding."""
    ref = json.loads((Path(__file__).parent / "reference" / "minilm_hf.json").read_text(encoding="utf-8"))
    tok, enc = minilm()
    enc.eval()
    texts = [t["text"] for t in ref["texts"]]
    assert [tok.tokenize(t) for t in texts] == [t["ids"] for t in ref["texts"]]
    ids, mask = tok.encode_batch(texts)
    with torch.no_grad():
        cls = enc(ids, mask)[:, 0]
        sentence = enc.sentence_embedding(ids, mask)
    for got, key in ((cls, "cls"), (sentence, "sentence_embedding")):
        want = torch.tensor([t[key] for t in ref["texts"]])
        assert (got - want).abs().max() < 1e-4, key
