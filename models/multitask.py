"""Multitask multimodal network of Pagé Fortin & Chaib-draa (2019), MoodLake's production model.

M. Pagé Fortin and B. Chaib-draa, "Multimodal Multitask Emotion Recognition using Images, Texts
and Tags", ACM ICMR Workshop on Crossmodal Learning and Application (WCRML), 2019.

Three extractors turn each available modality into a 300-d vector (paper: feature extractors):

- image: a pretrained CNN whose ImageNet classifier is replaced by a 300-unit layer
  (EfficientNet-Lite0 by default, offline; DenseNet-121 or AlexNet by config);
- text: a Kim-style CNN over word embeddings (Kim, EMNLP 2014): windows 3, 4 and 5 with 100
  filters each, ReLU, global max, average and min pooling concatenated (900-d), dropout 0.25 and
  a 300-unit layer; at most 150 words;
- tags: 250-d embeddings (random init), one convolution of 300 filters over single tags (kernel
  1), ReLU, global max pooling; at most 10 tags.

MoodLake option (``text_encoder="minilm"``, not in the paper): the text extractor is the pretrained
sentence encoder all-MiniLM-L6-v2 (:mod:`.minilm`; mean of its token vectors, then the 300-unit
layer), fine-tuned in its top ``text_trainable_layers`` layers. It reads the text from the batch's
``chars`` (the character ids of the dataset's vocabulary, ``char_alphabet``), so any dataset built
for the Kim CNN serves it too.

Seven classifiers (paper: multitask classifiers), one per non-empty subset of {image, text, tags} (three unimodal,
three bimodal, one trimodal), read the concatenation of their modalities' vectors and have two
layers of 256 and 128 units with ReLU and a softmax layer. Training (paper: multitask loss) sums the
cross-entropies of every classifier whose modalities are all present in the example, so posts
with missing modalities still train the heads they can; prediction routes each post to the
classifier of exactly its available modalities.

Batch format (what issue #4's data loaders produce)::

    image  float [B, 3, H, W]  normalised with the backbone's PREPROCESSING (any H, W >= 32)
    text   long  [B, L<=150]   word ids, 0 = <PAD>, 1 = <UNK>   (text_encoder="kim_cnn")
    chars  long  [B, C]        character ids, 0 = <PAD>, 1 = <UNK>  (text_encoder="minilm")
    tags   long  [B, T<=10]    tag ids, 0 = <PAD>
    mask   bool  [B, 3]        (image, text, tags) present and usable
    label  long  [B]           class index into the label set (only for ``loss``)

A modality that no example of the batch has may be left out of the batch.
"""
from __future__ import annotations

from itertools import combinations
from typing import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import image_backbone
from .minilm import minilm
from .registry import register_model
from .weights import Pretrained

MODALITIES = ("image", "text", "tags")
HEADS = tuple("+".join(c) for r in (1, 2, 3) for c in combinations(MODALITIES, r))
"""Head names in order: image, text, tags, image+text, image+tags, text+tags, image+text+tags."""

FEATURE_DIM = 300


def pattern_code(mask: torch.Tensor) -> torch.Tensor:
    """long [B]: each example's modality pattern as bits (image 1, text 2, tags 4), 1..7."""
    return (mask.long() * torch.tensor([1, 2, 4], device=mask.device)).sum(1)


def independent_parts(codes: Iterable[int]) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    """The parts of the model that no example connects, given the modality patterns (``pattern_code``)
    the training data has: ``{part: (its patterns, the state-dict key prefixes of its modules)}``.

    Modalities that appear together in some example are one part (with image+text posts, the image
    and text extractors share every gradient step); a part holds its modalities' extractors and
    every head whose modalities all lie in it. Heads that span two parts (e.g. image+text when no
    post has both) are in none: nothing trains them. Unpaired image-only and text-only data (the
    joint Emotion6 + GoEmotions model) give two parts, each trained exactly as it would be alone;
    VSO's trimodal posts give one.
    """
    groups: list[set[str]] = []
    for code in sorted(set(codes)):
        present = {m for i, m in enumerate(MODALITIES) if code >> i & 1}
        if not present:
            continue
        touching = [g for g in groups if g & present]
        merged = present.union(*touching)
        groups = [g for g in groups if not g & present] + [merged]
    parts = {}
    for group in sorted(groups, key=lambda g: min(MODALITIES.index(m) for m in g)):
        name = "+".join(m for m in MODALITIES if m in group)
        members = tuple(c for c in range(1, 8) if {m for i, m in enumerate(MODALITIES) if c >> i & 1} <= group)
        prefixes = tuple(f"extractors.{m}." for m in MODALITIES if m in group) + tuple(
            f"heads.{h}." for h in HEADS if set(h.split("+")) <= group)
        parts[name] = (members, prefixes)
    return parts


class ImageExtractor(nn.Module):
    """A pretrained backbone whose classifier is replaced by a 300-unit ReLU layer (paper: image extractor).

    ``dropout`` (MoodLake option, 0 in the paper) drops pooled backbone features before that layer,
    as the ImageNet classifier it replaces was trained (EfficientNet: 0.2).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", pretrained: Pretrained = True,
                 trainable_stages: int | None = None, out_dim: int = FEATURE_DIM, dropout: float = 0.0):
        super().__init__()
        self.backbone = image_backbone(backbone, pretrained)
        self.backbone.freeze(trainable_stages)
        self.dropout = _dropout(dropout)
        self.fc = nn.Linear(self.backbone.num_features, out_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.dropout(self.backbone(images))))


def _dropout(p: float) -> nn.Module:
    """``nn.Dropout(p)``, or an identity for 0 (no layer that could draw random numbers)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    return nn.Dropout(p) if p > 0 else nn.Identity()


class TextCNN(nn.Module):
    """Kim (2014)'s CNN for sentences, with the max, average and min pooling of the paper's text extractor.

    Only windows that lie inside the text are pooled (a text shorter than the widest window
    pools its first window, completed with zero padding vectors), so the output does not depend on
    how much padding the batch added.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 50, word_vectors: torch.Tensor | None = None,
                 freeze_word_vectors: bool = False, windows: Sequence[int] = (3, 4, 5), filters: int = 100,
                 dropout: float = 0.25, out_dim: int = FEATURE_DIM, max_words: int = 150):
        super().__init__()
        if word_vectors is not None:
            if word_vectors.shape != (vocab_size, embedding_dim):
                raise ValueError(f"word_vectors {tuple(word_vectors.shape)} != (vocab_size, embedding_dim) "
                                 f"({vocab_size}, {embedding_dim})")
            self.embedding = nn.Embedding.from_pretrained(word_vectors.float(), freeze=freeze_word_vectors,
                                                          padding_idx=0)
        else:
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.windows = tuple(windows)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, filters, k) for k in self.windows)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(3 * filters * len(self.windows), out_dim)
        self.max_words = max_words

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        if words.shape[1] > self.max_words:
            raise ValueError(f"text has {words.shape[1]} words, more than max_words={self.max_words}")
        lengths = (words != 0).sum(1)
        widest = max(self.windows)
        if words.shape[1] < widest:
            words = F.pad(words, (0, widest - words.shape[1]))
        x = self.embedding(words).transpose(1, 2)  # [B, E, L]
        pooled = []
        for k, conv in zip(self.windows, self.convs):
            h = F.relu(conv(x))  # [B, F, L-k+1]
            n_windows = (lengths - k + 1).clamp(min=1)
            valid = torch.arange(h.shape[2], device=h.device)[None, :] < n_windows[:, None]  # [B, L-k+1]
            valid = valid[:, None, :]
            pooled += [h.masked_fill(~valid, float("-inf")).amax(2),
                       (h * valid).sum(2) / n_windows[:, None],
                       h.masked_fill(~valid, float("inf")).amin(2)]
        return F.relu(self.fc(self.dropout(torch.cat(pooled, 1))))


class MiniLMText(nn.Module):
    """all-MiniLM-L6-v2 over the text rebuilt from character ids, mean-pooled, then a 300-unit ReLU layer.

    ``trainable_layers``: how many of the encoder's top layers are fine-tuned (0: frozen; the
    embeddings train only when every layer does). The frozen lower layers run without autograd and,
    after :meth:`cache_frozen`, are memoised per text (text has no augmentation, so the same text
    always gives the same vectors).
    """

    input_key = "chars"

    def __init__(self, char_alphabet: Sequence[str], pretrained: bool = True, trainable_layers: int = 2,
                 dropout: float = 0.1, out_dim: int = FEATURE_DIM):
        super().__init__()
        if len(char_alphabet) < 2:
            raise ValueError("char_alphabet must be the dataset vocabulary's characters (<PAD>, <UNK>, ...)")
        # ids 0 (<PAD>) and 1 (<UNK>: a character the training split never had) read as nothing
        self.alphabet = ["", "", *char_alphabet[2:]]
        self.tokenizer, self.encoder = minilm(pretrained)
        depth = len(self.encoder.layers)
        if not 0 <= trainable_layers <= depth:
            raise ValueError(f"text_trainable_layers must be 0..{depth}, got {trainable_layers}")
        self.frozen_layers = depth - trainable_layers
        trainable = list(self.encoder.parameters()) if trainable_layers == depth else \
            [p for layer in self.encoder.layers[self.frozen_layers:] for p in layer.parameters()]
        for p in self.encoder.parameters():
            p.requires_grad = False
        for p in trainable:
            p.requires_grad = True
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.encoder.dim, out_dim)
        self.cache_frozen(0)

    def cache_frozen(self, max_bytes: int) -> None:
        """Memoise the frozen layers' token vectors per text, up to ``max_bytes`` (0: off)."""
        self._cache: dict[str, torch.Tensor] | None = {} if max_bytes > 0 and self.frozen_layers else None
        self._cache_left = int(max_bytes)
        self.cache_hits = self.cache_misses = 0

    def texts(self, chars: torch.Tensor) -> list[str]:
        a = self.alphabet
        return ["".join(a[c] for c in row if c > 1) for row in chars.tolist()]

    def _frozen(self, texts: list[str], ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor | None:
        """The token vectors after the frozen layers (None when every layer trains), from the cache where it can."""
        if not self.frozen_layers:
            return None
        with torch.no_grad():
            if self._cache is None:
                return self.encoder(ids, attention, last_layer=self.frozen_layers)
            lengths = attention.sum(1).tolist()
            missing = [i for i, t in enumerate(texts) if t not in self._cache]
            self.cache_hits += len(texts) - len(missing)
            self.cache_misses += len(missing)
            computed = {}
            if missing:
                fresh = self.encoder(ids[missing], attention[missing], last_layer=self.frozen_layers)
                for j, i in enumerate(missing):
                    computed[i] = v = fresh[j, : lengths[i]].clone()
                    if self._cache_left >= v.numel() * v.element_size():
                        self._cache[texts[i]] = v
                        self._cache_left -= v.numel() * v.element_size()
            rows = [computed[i] if i in computed else self._cache[t] for i, t in enumerate(texts)]
            hidden = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
            return F.pad(hidden, (0, 0, 0, ids.shape[1] - hidden.shape[1]))

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        texts = self.texts(chars)
        ids, attention = (t.to(chars.device) for t in self.tokenizer.encode_batch(texts))
        hidden = self._frozen(texts, ids, attention)
        tokens = self.encoder(ids, attention, first_layer=self.frozen_layers, hidden=hidden)
        return F.relu(self.fc(self.dropout(self.encoder.mean_pool(tokens, attention))))


class TagCNN(nn.Module):
    """Tag embeddings, a 300-filter convolution over single tags, ReLU, global max pooling (paper: tags extractor).

    Padding tags (id 0) are left out of the maximum; a post whose tags are all padding gets zeros.
    """

    def __init__(self, vocab_size: int, embedding_dim: int = 250, filters: int = FEATURE_DIM, max_tags: int = 10):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.conv = nn.Conv1d(embedding_dim, filters, kernel_size=1)
        self.max_tags = max_tags

    def forward(self, tags: torch.Tensor) -> torch.Tensor:
        if tags.shape[1] > self.max_tags:
            raise ValueError(f"post has {tags.shape[1]} tag slots, more than max_tags={self.max_tags}")
        h = F.relu(self.conv(self.embedding(tags).transpose(1, 2)))  # [B, F, T]
        # ReLU outputs are >= 0, so zeroing padding positions leaves the maximum over real tags unchanged
        return (h * (tags != 0)[:, None, :]).amax(2)


class FusionClassifier(nn.Module):
    """Two layers of 256 and 128 units with ReLU, then the (softmax) output layer (paper: classifiers).

    ``dropout`` (MoodLake option, 0 in the paper) drops the input of every layer but the first."""

    def __init__(self, in_dim: int, num_classes: int, hidden: Sequence[int] = (256, 128), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for i, width in enumerate(hidden):
            layers += ([_dropout(dropout)] if i and dropout else []) + [nn.Linear(in_dim, width), nn.ReLU(inplace=True)]
            in_dim = width
        layers += ([_dropout(dropout)] if dropout else []) + [nn.Linear(in_dim, num_classes)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


def _resolve_labels(labels: Sequence[str] | None, num_classes: int | None) -> tuple[str, ...]:
    """The class names, in class-index order. Label sets are configuration (conf/base/labels.yaml):
    callers pass ``cfg.label_set(name)``; a bare string is refused, so a name cannot be mistaken
    for a list of one-character labels."""
    if labels is None:
        if num_classes is None:
            raise ValueError("give labels (e.g. cfg.label_set('mikels8')) or num_classes")
        return tuple(f"class_{i}" for i in range(num_classes))
    if isinstance(labels, str):
        raise TypeError(f"labels must be a list of class names, got the string {labels!r}; "
                        f"resolve label-set names through the configuration (cfg.label_set({labels!r}))")
    names = tuple(labels)
    if num_classes is not None and num_classes != len(names):
        raise ValueError(f"num_classes={num_classes} but the label set has {len(names)} labels")
    return names


class MultitaskMultimodalNet(nn.Module):
    """Image, text and tag extractors with seven modality-subset classifiers (module docstring).

    ``forward(batch)`` returns ``{head: logits [B, C]}`` for the seven ``HEADS``. A head's row is
    computed only for the examples that have all of its modalities and is zero elsewhere; each
    extractor runs only on the examples that have its modality, so nothing (no gradient either)
    flows through the extractor of an absent modality. ``loss(outputs, batch)`` and
    ``predict(batch)`` are described on the methods.
    """

    def __init__(self, *, labels: Sequence[str] | None = None, num_classes: int | None = None,
                 vocab_size: int, tag_vocab_size: int, word_dim: int = 50,
                 word_vectors: torch.Tensor | None = None, freeze_word_vectors: bool = False,
                 image_backbone: str = "efficientnet_lite0", pretrained: Pretrained = True,
                 image_trainable_stages: int | None = None, max_words: int = 150, max_tags: int = 10,
                 dropout: float = 0.25, multi_label: bool = False, text_encoder: str = "kim_cnn",
                 char_alphabet: Sequence[str] | None = None, text_trainable_layers: int = 2,
                 text_encoder_lr_scale: float = 0.05, image_backbone_lr_scale: float = 1.0,
                 image_dropout: float = 0.0, head_dropout: float = 0.0):
        super().__init__()
        self.labels = _resolve_labels(labels, num_classes)
        self.num_classes = len(self.labels)
        self.multi_label = multi_label
        image = ImageExtractor(image_backbone, pretrained, image_trainable_stages,
                               dropout=image_dropout)  # built first: the seeded init order
        if text_encoder == "kim_cnn":
            text = TextCNN(vocab_size, word_dim, word_vectors, freeze_word_vectors, dropout=dropout,
                           max_words=max_words)
        elif text_encoder == "minilm":
            if char_alphabet is None:
                raise ValueError("text_encoder='minilm' reads the text from chars: give char_alphabet (vocab.chars)")
            text = MiniLMText(char_alphabet, pretrained is not False, text_trainable_layers, dropout=0.1)
        else:
            raise ValueError(f"text_encoder must be 'kim_cnn' or 'minilm', got {text_encoder!r}")
        self.text_encoder_lr_scale = text_encoder_lr_scale
        self.image_backbone_lr_scale = image_backbone_lr_scale
        self.extractors = nn.ModuleDict({
            "image": image,
            "text": text,
            "tags": TagCNN(tag_vocab_size, max_tags=max_tags),
        })
        self.heads = nn.ModuleDict({
            head: FusionClassifier(FEATURE_DIM * len(head.split("+")), self.num_classes, dropout=head_dropout)
            for head in HEADS
        })

    def param_groups(self, lr: float) -> list[dict]:
        """The optimizer's groups: everything at ``lr``, except a pretrained text encoder's layers at
        ``lr * text_encoder_lr_scale`` (a transformer is fine-tuned at about 5e-5, not Adam's 1e-3) and,
        when ``image_backbone_lr_scale`` is not 1, the image backbone's trainable stages at
        ``lr * image_backbone_lr_scale`` (new layers learn fast, pretrained ones are only adjusted)."""
        text = self.extractors["text"]
        scaled = [(self.text_encoder_lr_scale, text.encoder if isinstance(text, MiniLMText) else None),
                  (self.image_backbone_lr_scale,
                   self.extractors["image"].backbone if self.image_backbone_lr_scale != 1.0 else None)]
        groups, taken = [], set()
        for scale, module in scaled:
            params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
            if params:
                groups.append({"params": params, "lr": lr * scale})
                taken.update(id(p) for p in params)
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        return [{"params": rest, "lr": lr}] + groups

    @staticmethod
    def check_mask(mask: torch.Tensor) -> None:
        """Raise ``ValueError`` naming the examples that have no usable modality."""
        if mask.dtype != torch.bool or mask.ndim != 2 or mask.shape[1] != len(MODALITIES):
            raise ValueError(f"mask must be bool [B, 3] in the order {MODALITIES}, got {mask.dtype} {tuple(mask.shape)}")
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"examples {empty} have no usable modality (image, text or tags): "
                             "a post needs at least one to be classified")

    @staticmethod
    def head_mask(mask: torch.Tensor, head: str) -> torch.Tensor:
        """bool [B]: the examples that have every modality of ``head``."""
        return torch.stack([mask[:, MODALITIES.index(m)] for m in head.split("+")], 1).all(1)

    @staticmethod
    def route(mask: torch.Tensor) -> list[str]:
        """The head of exactly each example's available modalities (e.g. ``"image+tags"``)."""
        MultitaskMultimodalNet.check_mask(mask)
        return ["+".join(m for m, present in zip(MODALITIES, row) if present) for row in mask.tolist()]

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = batch["mask"]
        self.check_mask(mask)
        n = mask.shape[0]
        features: dict[str, torch.Tensor] = {}
        for i, modality in enumerate(MODALITIES):
            rows = mask[:, i].nonzero().flatten()
            if len(rows) == 0:
                continue
            key = getattr(self.extractors[modality], "input_key", modality)
            if key not in batch:
                raise ValueError(f"mask says {len(rows)} examples have {modality!r} but the batch has no {key!r}")
            extracted = self.extractors[modality](batch[key][rows])
            features[modality] = extracted.new_zeros(n, extracted.shape[1]).index_copy(0, rows, extracted)
        dtype = next(iter(features.values())).dtype
        outputs = {}
        for head in HEADS:
            rows = self.head_mask(mask, head).nonzero().flatten()
            outputs[head] = torch.zeros(n, self.num_classes, dtype=dtype, device=mask.device)
            if len(rows):
                fused = torch.cat([features[m][rows] for m in head.split("+")], 1)
                outputs[head] = outputs[head].index_copy(0, rows, self.heads[head](fused))
        return outputs

    def loss(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
             class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the batch of each example's summed loss over the heads it can use (paper: multitask loss).

        Single-label: cross-entropy with ``batch["label"]``. Multi-label (``multi_label=True``, e.g.
        GoEmotions): binary cross-entropy with the multi-hot ``batch["labels"]``, summed over the
        classes. ``class_weights`` [C] weigh the classes (imbalance): the cross-entropy's class
        weights, or the positive terms of the binary cross-entropy. A head whose modalities are not
        all present in an example contributes exactly zero for it (its term is never computed).
        """
        mask = batch["mask"]
        total = outputs[HEADS[0]].new_zeros(())
        for head in HEADS:
            rows = self.head_mask(mask, head)
            if not rows.any():
                continue
            logits = outputs[head][rows]
            if self.multi_label:
                terms = F.binary_cross_entropy_with_logits(logits, batch["labels"][rows].to(logits.dtype),
                                                           pos_weight=class_weights, reduction="none")
                total = total + terms.sum()
            else:
                total = total + F.cross_entropy(logits, batch["label"][rows], weight=class_weights, reduction="sum")
        return total / mask.shape[0]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the classes, or per-class sigmoids when multi-label."""
        return logits.sigmoid() if self.multi_label else logits.softmax(1)

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class probabilities [B, C] (per-class sigmoids when multi-label), each example from the head
        of exactly its available modalities.

        Raises ``ValueError`` naming the examples without any usable modality. Uses the current
        train/eval mode: call ``model.eval()`` first for inference.
        """
        return self.routed_probabilities(self(batch), batch["mask"])

    def routed_probabilities(self, outputs: Mapping[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """``predict`` from the outputs of a forward pass already made (float32 [B, C])."""
        probs = outputs[HEADS[0]].new_zeros(mask.shape[0], self.num_classes, dtype=torch.float32)
        for head in HEADS:
            exact = self.head_mask(mask, head) & (mask.sum(1) == len(head.split("+")))
            probs[exact] = self.probabilities(outputs[head][exact].float())
        return probs


@register_model
def multitask(*, labels: Sequence[str] | None = None, num_classes: int | None = None,
              vocab_size: int = 20000, tag_vocab_size: int = 5000, word_dim: int = 50,
              word_vectors: torch.Tensor | None = None, freeze_word_vectors: bool = False,
              image_backbone: str = "efficientnet_lite0", pretrained: Pretrained = True,
              image_trainable_stages: int | None = None, max_words: int = 150, max_tags: int = 10,
              dropout: float = 0.25, multi_label: bool = False, text_encoder: str = "kim_cnn",
              char_alphabet: Sequence[str] | None = None, text_trainable_layers: int = 2,
              text_encoder_lr_scale: float = 0.05, image_backbone_lr_scale: float = 1.0,
              image_dropout: float = 0.0, head_dropout: float = 0.0) -> MultitaskMultimodalNet:
    """The production multitask multimodal model; ``word_vectors`` e.g. from ``glove_embedding_matrix``.

    ``labels``: the class names in index order, from the configuration (``cfg.label_set(name)``);
    or ``num_classes`` alone for unnamed classes. ``image_trainable_stages``: train only that many of the
    backbone's last stages (None: the whole backbone, 0: frozen). ``text_encoder``: ``"kim_cnn"``
    (the paper's) or ``"minilm"`` (pretrained all-MiniLM-L6-v2 reading ``chars``; needs
    ``char_alphabet``, the dataset vocabulary's characters; its top ``text_trainable_layers`` layers
    train at ``lr * text_encoder_lr_scale``). ``image_backbone_lr_scale``: the trainable backbone stages
    train at ``lr * image_backbone_lr_scale`` (1: the same rate as the rest). ``image_dropout``: dropout on
    the pooled backbone features; ``head_dropout``: dropout inside the seven classifiers (both 0 in the
    paper; they regularise small image sets such as Emotion6's 945 training images).
    """
    return MultitaskMultimodalNet(labels=labels, num_classes=num_classes, vocab_size=vocab_size,
                                  tag_vocab_size=tag_vocab_size, word_dim=word_dim, word_vectors=word_vectors,
                                  freeze_word_vectors=freeze_word_vectors, image_backbone=image_backbone,
                                  pretrained=pretrained, image_trainable_stages=image_trainable_stages,
                                  max_words=max_words, max_tags=max_tags, dropout=dropout,
                                  multi_label=multi_label, text_encoder=text_encoder, char_alphabet=char_alphabet,
                                  text_trainable_layers=text_trainable_layers,
                                  text_encoder_lr_scale=text_encoder_lr_scale,
                                  image_backbone_lr_scale=image_backbone_lr_scale,
                                  image_dropout=image_dropout, head_dropout=head_dropout)
