"""Photo id lists in the formats research sets come in."""
from __future__ import annotations

import pytest

from moodlake.sources.idlists import read_id_list


def test_plain_ids_with_comments_and_bad_lines(tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("# nightly list\n123\n\n456\nnot-an-id\n")
    fmt, items = read_id_list(f)
    items = list(items)
    assert fmt == "plain"
    assert [(i.input_ref, i.source_id) for i in items] == [("ids.txt:2", "123"), ("ids.txt:4", "456"), ("ids.txt:5", None)]
    assert items[2].error[1] == "invalid_id"


def test_csv_with_header_labels_and_votes(tmp_path):
    f = tmp_path / "l.csv"
    f.write_text("photo_id,label,agree,disagree\n11,joy,4,1\n12,fear,,\n")
    fmt, items = read_id_list(f)
    items = list(items)
    assert fmt == "csv"
    assert items[0].source_id == "11" and items[0].payload["label"] == "joy"
    assert (items[0].payload["agree"], items[0].payload["disagree"]) == (4, 1)
    assert items[1].payload["agree"] is None


def test_csv_without_header_is_id_then_label(tmp_path):
    f = tmp_path / "vso.tsv"
    f.write_text("7924423716\tpositive\n7924423717\tnegative\n")
    _, items = read_id_list(f, "csv")
    assert [(i.source_id, i.payload["label"]) for i in items] == [("7924423716", "positive"), ("7924423717", "negative")]


def test_fi_lines_give_ids_from_flickr_urls(tmp_path):
    f = tmp_path / "amusement_1.csv"
    f.write_text(
        "amusement,http://farm9.staticflickr.com/8460/7924423716_dc9c8bbd3b.jpg,1,4\n"
        "amusement,http://farm9.staticflickr.com/8460/7924423799_dc9c8bbd3b_z.jpg,0,5\n"
        "amusement,http://example.org/no-id.jpg,2,3\n"
        "amusement,broken line\n"
    )
    fmt, items = read_id_list(f)
    items = list(items)
    assert fmt == "fi"
    assert items[0].source_id == "7924423716"
    assert (items[0].payload["label"], items[0].payload["agree"], items[0].payload["disagree"]) == ("amusement", 4, 1)
    assert items[1].source_id == "7924423799" and items[1].payload["agree"] == 5
    assert items[2].error[1] == "invalid_id" and items[3].error[1] == "malformed_line"


@pytest.mark.data
def test_cross_sentiment_mat_file(shared_data):
    fmt, items = read_id_list(shared_data / "flickr_crosssentiment" / "finalDataset.mat")
    items = list(items)
    assert fmt == "mat" and len(items) == 69_893
    assert all(i.error is None for i in items)
    assert items[0].source_id == "6101204291"  # the file's first id
    labels = [i.payload["label"] for i in items]
    assert (labels.count("positive"), labels.count("neutral"), labels.count("negative")) == (37_622, 22_658, 9_613)
