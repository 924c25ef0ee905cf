"""The per-type table ``station evaluate`` prints: what a line engineer reads first."""

from __future__ import annotations

from training.report import per_type_table


def _block(**types: dict) -> dict:
    return {"per_defect_type": types}


def test_each_defect_type_and_the_good_parts_get_a_row():
    crack = {"n": 4, "recall": 0.75, "image_auroc": 0.9, "pixel_auroc": 0.95, "aupro": 0.8}
    good = {"n": 10, "false_reject_rate": 0.1}
    result = {"autoencoder": _block(crack=crack, good=good),
              "classifier": None, "fused": _block(crack={"n": 4, "recall": 1.0}, good=good)}
    lines = per_type_table(result)
    assert lines[1].split() == ["defect", "type", "n", "autoencoder", "fused"]
    assert lines[2].split()[:5] == ["crack", "4", "0.750", "/", "0.900"]
    assert "[0.950 / 0.800]" in lines[2]
    assert lines[3].split() == ["good:", "false", "rejects", "10", "0.100", "0.100"]


def test_a_batch_of_good_parts_alone_still_says_how_many_were_rejected():
    """Evaluated on good parts only (a check of a new batch), there is no defect row, but
    the false-reject rate is what the engineer ran it for."""
    good = {"n": 3, "false_reject_rate": 1 / 3}
    lines = per_type_table({"autoencoder": _block(good=good), "fused": _block(good=good)})
    assert lines[-1].split() == ["good:", "false", "rejects", "3", "0.333", "0.333"]
    assert per_type_table({"autoencoder": _block(), "fused": _block()}) == []
