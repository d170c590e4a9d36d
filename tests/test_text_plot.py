"""plot_text: explanations of a sequence as lines of coloured tokens (also the TextWidget's PNG fallback)."""

from __future__ import annotations

import pytest
import torch
from test_sequences import IDS, TinyAttention

import livexai

TOKENS = ["the", "screen", "is", "not", "good", ".", "<pad>", "<pad>"]


def test_each_explanation_is_a_line_of_its_tokens_with_the_rationale_underlined() -> None:
    model = TinyAttention().eval()
    explanations = [livexai.kernel_shap(model, IDS), livexai.attention(model, IDS).explanation(layer=None)]
    rationale = [0, 0, 0, 1, 1, 0, 0, 0]
    figure = livexai.plot_text(explanations, TOKENS, rationale=rationale, titles=["SHAP", "rollout"])
    texts = [t.get_text() for t in figure.axes[0].texts]
    assert texts == ["SHAP", *TOKENS[:6], "rollout", *TOKENS[:6]]  # padding left out
    assert len(figure.axes[0].lines) == 2 * 2  # "not" and "good", on both lines
    boxes = [t.get_bbox_patch().get_facecolor() for t in figure.axes[0].texts if t.get_bbox_patch()]
    strongest = int(explanations[0].attributions[:6].abs().argmax())
    assert boxes[strongest][3] == pytest.approx(0.8)  # the largest value is the most opaque
    assert figure.get_size_inches()[0] > 2.0  # as wide as the sentence needs


def test_mismatched_tokens_are_named() -> None:
    explanation = livexai.kernel_shap(TinyAttention().eval(), IDS)
    with pytest.raises(ValueError, match="expected one value per token \\(3\\)"):
        livexai.plot_text(explanation, ["a", "b", "c"])
    with pytest.raises(ValueError, match="got 2 flags for 8 tokens"):
        livexai.plot_text(explanation, TOKENS, rationale=[1, 0])


def test_the_text_widget_saves_its_explanation_as_a_png(tmp_path) -> None:
    widget = livexai.TextWidget(TinyAttention().eval(), IDS, n_samples=100)
    path = widget.save_png(tmp_path / "text.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert torch.equal(IDS, torch.tensor([4, 9, 17, 3, 25, 11, 0, 0]))
    widget.close()
