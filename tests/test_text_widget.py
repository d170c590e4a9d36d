"""TextWidget without a browser: each method's values equal the core function's, typed text is read through the
vocabulary, and mistakes are shown in the widget, which keeps working."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_sequences import IDS, PAD, TinyAttention, tiny_bert

import livexai
from livexai.widgets._serialize import from_wire

VOCAB = ["<pad>", "<unk>", *(f"w{i}" for i in range(2, 30))]


@pytest.fixture()
def model() -> TinyAttention:
    return TinyAttention().eval()


def values(widget: livexai.TextWidget) -> np.ndarray:
    return from_wire(widget.text["values"])


def test_lime_values_equal_the_core_function_and_tokens_are_the_vocabulary_words(model) -> None:
    rationale = [0, 1, 1, 0, 0, 0, 0, 0]
    widget = livexai.TextWidget(
        model, IDS, vocab=VOCAB, labels=["neg", "pos"], rationale=rationale, n_samples=300
    )
    explanation = widget.wait(60)
    direct = livexai.lime(model, IDS, n_samples=300)
    torch.testing.assert_close(explanation.attributions, direct.attributions)
    np.testing.assert_allclose(values(widget), direct.attributions.numpy())
    text = widget.text
    assert text["tokens"] == ["w4", "w9", "w17", "w3", "w25", "w11", "<pad>", "<pad>"]
    assert from_wire(text["content"]).tolist() == [1] * 6 + [0, 0]
    assert from_wire(text["rationale"]).tolist() == rationale
    assert text["signed"] and text["status"] == "done" and text["note"].startswith("surrogate R²")
    assert text["editable"] and text["sentence"] == "w4 w9 w17 w3 w25 w11"
    widget.close()


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("kernel_shap", lambda m: livexai.kernel_shap(m, IDS, n_samples=200, target=0).attributions),
        ("integrated_gradients", lambda m: livexai.integrated_gradients(m, IDS, target=0).attributions),
        ("attention", lambda m: livexai.attention(m, IDS).scores(layer="first", head=1)),
        ("rollout", lambda m: livexai.attention(m, IDS).scores(layer=None)),
    ],
)
def test_every_method_shows_what_the_core_computes(model, method, expected) -> None:
    widget = livexai.TextWidget(model, IDS, n_samples=200, target=0)
    widget.set_state({"method": method, "layer": "first", "head": "1"})
    widget.wait(60)
    assert widget.status == "idle", widget.error
    np.testing.assert_allclose(values(widget), expected(model).numpy(), rtol=1e-5, atol=1e-6)
    assert widget.text["signed"] == (method not in ("attention", "rollout"))
    assert widget.text["tokens"][0] == "#4"  # no vocabulary: ids shown as text
    assert not widget.text["editable"]
    widget.close()


def test_attention_controls_follow_the_models_layers_and_heads(model) -> None:
    widget = livexai.TextWidget(model, IDS)
    widget.wait(60)
    by_name = {c["name"]: c for c in widget.controls}
    assert by_name["method"]["choices"] == [
        "lime",
        "kernel_shap",
        "integrated_gradients",
        "attention",
        "rollout",
    ]
    assert "layer" not in by_name  # shown for attention only
    widget.method = "attention"
    by_name = {c["name"]: c for c in widget.controls}
    assert by_name["layer"]["choices"] == ["last", "first", "second"]
    assert by_name["head"]["choices"] == ["mean", "0", "1"]
    widget.close()


def test_a_model_without_attention_offers_the_attribution_methods_only() -> None:
    from test_sequences import BagOfEmbeddings

    widget = livexai.TextWidget(BagOfEmbeddings().eval(), IDS)
    widget.wait(60)
    assert widget.traits()["method"].options(widget) == ("lime", "kernel_shap", "integrated_gradients")
    widget.set_state({"method": "attention"})
    assert "method must be one of" in widget.error and widget.method == "lime"
    widget.close()


def test_typed_text_is_read_through_the_vocabulary_and_unknown_words_become_unk(model) -> None:
    widget = livexai.TextWidget(model, IDS, vocab=VOCAB, rationale=[1] + [0] * 7, n_samples=100)
    widget.wait(60)
    widget.set_state({"sentence": "W3 w5, zebra"})
    explanation = widget.wait(60)
    assert widget.status == "idle", widget.error
    assert widget.text["tokens"] == ["w3", "w5", "<unk>", "<unk>"]  # "," is not in this vocabulary either
    assert widget.text["rationale"] is None  # the ground truth was for the first sentence
    ids = torch.tensor([3, 5, 1, 1])
    torch.testing.assert_close(explanation.attributions, livexai.lime(model, ids, n_samples=100).attributions)
    assert widget.predictions[0]["index"] == int(model(ids[None]).argmax())
    widget.close()


def test_a_sentence_that_cannot_be_read_is_an_error_in_the_widget_which_keeps_working(model) -> None:
    widget = livexai.TextWidget(model, IDS, vocab=VOCAB, n_samples=100)
    widget.wait(60)
    widget.set_state({"sentence": "   "})
    assert widget.status == "error" and "no words" in widget.error
    widget.set_state({"sentence": "w7 w8"})
    widget.wait(60)
    assert widget.status == "idle" and widget.text["tokens"] == ["w7", "w8"]
    plain = livexai.TextWidget(model, IDS, n_samples=100)
    plain.set_state({"sentence": "w7"})
    assert plain.status == "error" and "no vocab or tokenizer" in plain.error
    widget.close()
    plain.close()


def test_constructor_mistakes_are_named(model) -> None:
    with pytest.raises(ValueError, match="rationale has 3 flags for 8 tokens"):
        livexai.TextWidget(model, IDS, rationale=[1, 0, 0])
    with pytest.raises(TypeError, match="vocab must be a list of words"):
        livexai.TextWidget(model, IDS, vocab="abc")
    with pytest.raises(ValueError, match=r"explains a sequence of token ids \(T,\)"):
        livexai.TextWidget(model, torch.rand(3, 8, 8))
    assert IDS[-1] == PAD


def test_a_hugging_face_model_with_its_tokenizer_groups_sub_tokens_into_words() -> None:
    transformers = pytest.importorskip("transformers")
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "the",
        "screen",
        "is",
        "not",
        "good",
        ".",
        "cam",
        "##era",
    ]
    tokenizer = transformers.BertTokenizerFast(vocab={word: i for i, word in enumerate(words)})
    bert = tiny_bert(len(words), num_labels=2)
    first = tokenizer("the camera is good", return_tensors="pt")
    widget = livexai.TextWidget(bert, first, tokenizer=tokenizer, method="kernel_shap")
    assert widget.wait(60).segments.tolist() == [-1, 0, 1, 1, 2, 3, -1]  # the given encoding's words
    widget.set_state({"sentence": "The camera is not good."})
    explanation = widget.wait(60)
    assert widget.status == "idle", widget.error
    assert widget.text["tokens"] == ["[CLS]", "the", "cam", "##era", "is", "not", "good", ".", "[SEP]"]
    # one feature a word ("cam" + "##era" share one value); [CLS] and [SEP] are no features
    assert explanation.segments.tolist() == [-1, 0, 1, 1, 2, 3, 4, 5, -1]
    assert explanation.attributions[2] == explanation.attributions[3] == explanation.weights[1]
    assert (
        explanation.params["exact"]
        and abs(float(explanation.weights.sum()) + explanation.base_value - explanation.prediction) < 1e-4
    )
    widget.set_state({"method": "attention"})
    widget.wait(60)
    assert widget.status == "idle" and bert.config._attn_implementation != "eager"
    widget.close()


def test_deep_shap_on_tokens_takes_a_named_embedding_layer(model) -> None:
    background = torch.tensor([[PAD] * 8, [5] * 6 + [PAD, PAD]])
    named = livexai.deep_shap(model, IDS, background=background, layer="embedding")
    default = livexai.deep_shap(model, IDS, background=background)
    torch.testing.assert_close(named.attributions, default.attributions)
    assert named.params["layer"] == "embedding" and abs(named.params["delta"]) < 1e-4
