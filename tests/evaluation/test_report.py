"""Reports: markdown tables, charts and training curves are written and readable."""

import pandas as pd
import pytest

from advrec.evaluation.report import bar_chart, markdown_table, training_curves


def test_training_curves_panels_and_collapse_shading(tmp_path):
    log = [
        {"epoch": 1, "loss": 1.0, "d_loss": 1.2, "g_loss": 1.0, "d_real_acc": 0.5, "d_fake_acc": 0.9,
         "gen_coverage": 0.3, "gen_jaccard": 0.1},
        {"epoch": 2, "loss": 0.9, "d_loss": 1.3, "g_loss": 0.9, "d_real_acc": 0.6, "d_fake_acc": 0.7,
         "gen_coverage": 0.1, "gen_jaccard": 0.9, "collapse": 1.0, "valid_ndcg@10": 0.2},
    ]  # fmt: skip
    png = training_curves(log, tmp_path / "curves.png", title="t")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = training_curves([{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.5}], tmp_path / "plain.png")
    assert plain.stat().st_size > 1000
    with pytest.raises(ValueError, match="empty"):
        training_curves([], tmp_path / "none.png")


def test_bar_chart_and_markdown(tmp_path):
    df = pd.DataFrame({"ndcg@10": [0.1, 0.2]}, index=["Pop", "EASE"])
    assert bar_chart(df, ["ndcg@10"], tmp_path / "bars.png").exists()
    assert "EASE" in markdown_table(df)
