"""The Petastorm schema of MoodLake's training datasets (one row per post), shared by the dataset
builder (:mod:`moodlake.data.build`) and the Torch data layer (:mod:`moodlake.data.loader`).

A dataset lives in one folder per build::

    <datasets root>/<name>/<version>/
        manifest.json   definition, label set, counts per split and per exclusion reason, vocab version
        vocab.json      {"version", "words", "tags", "chars"}: index 0 = <PAD>, 1 = <UNK>
        train/ val/ test/   Petastorm datasets with the Unischema below

Fields (``K`` = number of labels of the dataset's label set):

- ``post_id``     str
- ``image``       uint8 (224, 224, 3) RGB, or None when the post has no usable image. Stored as the
                  JPEG made by the feature job, unchanged (:class:`JpegCodec`); decoded by readers.
- ``text``        int32 (n,) word ids, n <= 150 (0 = pad never stored; 1 = <UNK>); empty without text
- ``chars``       int16 (m,) character codes of the cleaned text, m <= 4096; empty without text
- ``tags``        int32 (t,) tag ids, t <= 10; empty without tags
- ``mask``        bool (3,) image, text, tags usable (the multitask model's routing)
- ``label``       int32 index of the single label into the label set, -1 when there is none
- ``labels``      float32 (K,) multi-hot (multi-label sets such as GoEmotions; one-hot otherwise)
- ``label_dist``  float32 (K,) vote distribution when the source gives one, else zeros
- ``char_len``    int32 = m (bucketing by text length without decoding ``chars``)
"""
from __future__ import annotations

import numpy as np
from petastorm.codecs import CompressedImageCodec, NdarrayCodec, ScalarCodec
from petastorm.unischema import Unischema, UnischemaField
from pyspark.sql.types import IntegerType, StringType

IMAGE_SIZE = 224
MAX_WORDS = 150
MAX_TAGS = 10
MAX_CHARS = 4096
PAD, UNK = 0, 1
MODALITIES = ("image", "text", "tags")
_JPEG_MAGIC = b"\xff\xd8\xff"


class JpegCodec(CompressedImageCodec):
    """Petastorm's JPEG codec that also accepts JPEG bytes and stores them as they are.

    The feature job has already resized, cropped and encoded every image once; re-encoding a
    decoded copy would only lose quality and time. Decoding is Petastorm's (OpenCV, RGB out).
    """

    def __init__(self, quality: int = 90):
        super().__init__("jpeg", quality)

    def encode(self, unischema_field, value):
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value)
            if not value.startswith(_JPEG_MAGIC):
                raise ValueError(f"{unischema_field.name}: bytes given are not a JPEG")
            return bytearray(value)
        return super().encode(unischema_field, value)


def post_schema(num_labels: int, image_size: int = IMAGE_SIZE) -> Unischema:
    """The Unischema of a dataset whose label set has ``num_labels`` labels."""
    return Unischema("MoodLakePost", [
        UnischemaField("post_id", np.str_, (), ScalarCodec(StringType()), False),
        UnischemaField("image", np.uint8, (image_size, image_size, 3), JpegCodec(), True),
        UnischemaField("text", np.int32, (None,), NdarrayCodec(), False),
        UnischemaField("chars", np.int16, (None,), NdarrayCodec(), False),
        UnischemaField("tags", np.int32, (None,), NdarrayCodec(), False),
        UnischemaField("mask", np.bool_, (3,), NdarrayCodec(), False),
        UnischemaField("label", np.int32, (), ScalarCodec(IntegerType()), False),
        UnischemaField("labels", np.float32, (num_labels,), NdarrayCodec(), False),
        UnischemaField("label_dist", np.float32, (num_labels,), NdarrayCodec(), False),
        UnischemaField("char_len", np.int32, (), ScalarCodec(IntegerType()), False),
    ])
