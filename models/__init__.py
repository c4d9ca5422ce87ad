"""PyTorch architectures of MoodLake, one module per family, behind ``get_model(name, **cfg)``.

    from moodlake.models import get_model, list_models
    model = get_model("multitask", labels=cfg.label_set("ekman6"), pretrained=False)

Registered families (each module cites its paper):

- ``multitask``: Pagé Fortin & Chaib-draa (2019), the production model (:mod:`.multitask`)
- ``stpierre_image``, ``stpierre_char``, ``stpierre_fused``: St. Pierre's CNNs (:mod:`.stpierre`)
- ``campos_alexnet``: Campos et al. (2017), fine-tuned AlexNet variants (:mod:`.campos`), with the
  layer-by-layer analysis tool in :mod:`.analysis`
- ``zhu_multibranch``: Zhu et al. (2017), multi-branch CNN with a Bi-GRU (:mod:`.zhu`)
- ``williams_blstm``: Williams et al. (2018), early-fusion BLSTM (:mod:`.williams`)

Pretrained weights load offline only (:mod:`.weights`, :mod:`.backbones`, :mod:`.embeddings`).
Models hold no training loop, I/O or config parsing.
"""
from . import campos, multitask, stpierre, williams, zhu  # noqa: F401  (registers the builders)
from .backbones import PREPROCESSING, Preprocessing, image_backbone
from .embeddings import glove_embedding_matrix, sentence_encoder
from .registry import get_model, list_models, register_model
from .weights import PretrainedWeightsNotFound

__all__ = [
    "get_model", "list_models", "register_model", "image_backbone", "PREPROCESSING", "Preprocessing",
    "glove_embedding_matrix", "sentence_encoder", "PretrainedWeightsNotFound",
]
