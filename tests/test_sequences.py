"""Token-id sequences as inputs: every method on a model that starts with an embedding, checked against exact
values (enumeration), completeness, and a manual recomputation of attention."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

import livexai

PAD = 0
VOCAB = 30


class BagOfEmbeddings(nn.Module):
    """Logits = sum of token embeddings through a linear head: each token's exact contribution is known."""

    pad_token_id = PAD

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.Embedding(VOCAB, 6, padding_idx=PAD)
        self.head = nn.Linear(6, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).sum(dim=1))

    def contributions(self, ids: torch.Tensor, target: int) -> torch.Tensor:
        with torch.no_grad():
            return self.embedding(ids) @ self.head.weight[target]


class TinyAttention(nn.Module):
    """Two self-attention layers (one called with positional options), pad keys masked, mean pooled."""

    pad_token_id = PAD

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.Embedding(VOCAB, 8, padding_idx=PAD)
        self.first = nn.MultiheadAttention(8, 2, batch_first=True)
        self.second = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pad = ids == PAD
        pad = pad & ~pad.all(dim=1, keepdim=True)  # an all-pad row attends everywhere instead of nowhere
        h = self.embedding(ids)
        h = h + torch.tanh(self.first(h, h, h, key_padding_mask=pad, need_weights=False)[0])
        h = h + self.second(h, h, h, pad, False)[0]
        keep = (~pad).unsqueeze(-1).float()
        return self.head((h * keep).sum(1) / keep.sum(1).clamp_min(1))


IDS = torch.tensor([4, 9, 17, 3, 25, 11, PAD, PAD])


def shapley_by_enumeration(model: nn.Module, ids: torch.Tensor, features: list[list[int]], target: int):
    """Exact Shapley values of the features (lists of positions), absent tokens replaced by the pad id."""
    m = len(features)
    values = {}
    with torch.no_grad():
        for coalition in itertools.product([False, True], repeat=m):
            row = ids.clone()
            for on, positions in zip(coalition, features, strict=True):
                if not on:
                    row[positions] = PAD
            values[coalition] = float(model(row[None])[0, target])
    phi = torch.zeros(m, dtype=torch.float64)
    for coalition, value in values.items():
        size = sum(coalition)
        for i in range(m):
            if coalition[i]:
                without = tuple(c if j != i else False for j, c in enumerate(coalition))
                weight = math.factorial(size - 1) * math.factorial(m - size) / math.factorial(m)
                phi[i] += weight * (value - values[without])
    return phi


def test_kernel_shap_on_token_ids_equals_the_exact_per_token_contributions_of_a_linear_bag() -> None:
    model = BagOfEmbeddings().eval()
    explanation = livexai.kernel_shap(model, IDS, target=2)
    exact = model.contributions(IDS, 2)
    assert explanation.params["exact"]
    assert explanation.attributions.shape == (8,)
    torch.testing.assert_close(explanation.attributions, exact, atol=1e-5, rtol=1e-4)
    assert explanation.segments.tolist() == [0, 1, 2, 3, 4, 5, -1, -1]  # padding is no feature
    assert IDS.dtype == torch.long and IDS[-1] == PAD  # the caller's ids untouched


def test_kernel_shap_matches_brute_force_shapley_values_on_an_attention_model_with_word_groups() -> None:
    model = TinyAttention().eval()
    groups = [0, 0, 1, None, 2, 2, None, None]  # two-token words; token 3 is a special token, always kept
    explanation = livexai.kernel_shap(model, IDS, target=1, groups=groups)
    exact = shapley_by_enumeration(model, IDS, [[0, 1], [2], [4, 5]], target=1)
    torch.testing.assert_close(explanation.weights.double(), exact, atol=1e-5, rtol=1e-4)
    assert explanation.segments.tolist() == [0, 0, 1, -1, 2, 2, -1, -1]
    # a word's value is painted on each of its tokens
    assert explanation.attributions[0] == explanation.attributions[1] == explanation.weights[0]
    assert explanation.attributions[3] == 0


def test_lime_recovers_the_per_token_weights_of_a_linear_bag() -> None:
    model = BagOfEmbeddings().eval()
    explanation = livexai.lime(model, IDS, target=0, n_samples=600, alpha=1e-6)
    exact = model.contributions(IDS, 0)[:6]
    torch.testing.assert_close(explanation.weights, exact, atol=1e-3, rtol=1e-3)
    assert explanation.params["removal"] == "replace" and explanation.params["mask_token_id"] == PAD


def test_deleting_tokens_shifts_the_rest_left_and_pads_the_end() -> None:
    model = BagOfEmbeddings().eval()
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    explanation = livexai.kernel_shap(model, IDS, target=1, removal="delete")
    batches = torch.cat(seen[1:])
    for row in batches:
        real = row[row != PAD]
        assert (row[: len(real)] != PAD).all()  # kept tokens first, in their order
        order = [IDS.tolist().index(t) for t in real.tolist()]
        assert order == sorted(order)
    # a bag of embeddings does not care about positions: deletion and replacement agree
    torch.testing.assert_close(explanation.attributions, model.contributions(IDS, 1), atol=1e-5, rtol=1e-4)


def test_a_mask_token_other_than_pad_replaces_removed_tokens() -> None:
    model = BagOfEmbeddings().eval()
    explanation = livexai.kernel_shap(model, IDS, target=0, mask_token_id=7)
    mask_contribution = model.contributions(torch.tensor([7]), 0)[0]
    expected = model.contributions(IDS, 0)[:6] - mask_contribution
    torch.testing.assert_close(explanation.weights, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_shap", "deep_shap", "deeplift"])
def test_gradient_methods_attribute_at_the_embedding_and_report_completeness(method: str) -> None:
    model = TinyAttention().eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    background = torch.tensor([[PAD] * 8, [5, 5, 5, 5, 5, 5, PAD, PAD]])
    kwargs = {"background": background} if method in ("gradient_shap", "deep_shap") else {}
    if method == "gradient_shap":
        kwargs["n_samples"] = 400
    explanation = getattr(livexai, method)(model, IDS, target=0, **kwargs)
    assert explanation.attributions.shape == (8,)
    assert explanation.params["per_channel"].shape == (8, 8)
    gap = abs(explanation.params["delta"])
    total = abs(explanation.prediction - explanation.base_value)
    tolerance = 0.15 if method == "gradient_shap" else 0.01  # sampling error vs quadrature / exact rules
    assert gap <= tolerance * max(total, 1e-3), (method, gap, total)
    assert explanation.params.get("unsupported", []) == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    assert not model.first._forward_hooks and not model.embedding._forward_hooks


def test_integrated_gradients_on_a_bag_gives_each_token_its_exact_contribution() -> None:
    model = BagOfEmbeddings().eval()
    explanation = livexai.integrated_gradients(model, IDS, target=1)
    torch.testing.assert_close(explanation.attributions, model.contributions(IDS, 1), atol=1e-5, rtol=1e-4)
    assert explanation.params["layer"] == "embedding" and explanation.params["baseline"] == "pad tokens"


def test_saliency_on_tokens_is_zero_on_padding_and_a_layer_can_be_named() -> None:
    model = TinyAttention().eval()
    explanation = livexai.saliency(model, IDS, layer="embedding")
    assert (explanation.attributions[6:] == 0).all() and (explanation.attributions[:6] > 0).all()


def test_attention_sums_to_one_over_keys_and_equals_a_manual_recomputation() -> None:
    model = TinyAttention().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = livexai.attention(model, IDS)
    assert result.layer_names == ["first", "second"] and result.n_heads == 2
    for weights in result.weights:
        assert weights.shape == (2, 8, 8)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 8))
        assert (weights[:, :, 6:] == 0).all()  # padded keys get no attention
    with torch.no_grad():
        h = model.embedding(IDS[None])
        _, manual = model.first(h, h, h, key_padding_mask=IDS[None] == PAD, average_attn_weights=False)
    torch.testing.assert_close(result.weights[0], manual[0])
    torch.testing.assert_close(result.rollout.sum(-1), torch.ones(8))
    received = result.scores()
    assert received.shape == (8,) and (received[6:] == 0).all()
    assert result.explanation(layer=None).method == "attention_rollout"
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    for module in (model.first, model.second):
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert not model.training


def tiny_bert(vocab_size: int = VOCAB, num_labels: int = 3) -> nn.Module:
    """A two-layer BERT classifier built from a config (nothing downloaded), pad id 0, in eval mode."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=num_labels,
        max_position_embeddings=32,
        pad_token_id=PAD,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


def test_a_hugging_face_text_model_takes_a_tokenizer_mapping_with_its_attention_mask() -> None:
    model = tiny_bert()
    encoded = {
        "input_ids": torch.tensor([[2, 5, 7, 9, 3, PAD]]),
        "attention_mask": torch.tensor([[1] * 5 + [0]]),
    }
    implementation = model.config._attn_implementation
    result = livexai.attention(model, encoded)
    assert len(result.weights) == 2 and result.weights[0].shape == (2, 6, 6)
    torch.testing.assert_close(result.weights[1].sum(-1), torch.ones(2, 6))
    assert model.config._attn_implementation == implementation  # eager only for that call
    # word_ids-style groups: None for [CLS]/[SEP]
    shap = livexai.kernel_shap(model, encoded, target=1, groups=[None, 0, 1, 1, None, None])
    assert shap.params["exact"] and shap.weights.shape == (2,)
    assert abs(float(shap.weights.sum()) + shap.base_value - shap.prediction) < 1e-4
    ig = livexai.integrated_gradients(model, encoded, target=1)
    assert ig.params["layer"] == "bert.embeddings.word_embeddings"
    assert abs(ig.params["delta"]) <= 0.01 * max(abs(ig.prediction - ig.base_value), 1e-3)


def test_sequence_mistakes_get_specific_errors() -> None:
    model = BagOfEmbeddings().eval()
    with pytest.raises(ValueError, match=r"token ids from 1 to 99.*30 rows"):
        livexai.lime(model, torch.tensor([1, 99]))
    with pytest.raises(ValueError, match="only padding"):
        livexai.kernel_shap(model, torch.tensor([PAD, PAD]))
    with pytest.raises(ValueError, match="groups has 3 entries; expected one per token \\(8\\)"):
        livexai.kernel_shap(model, IDS, groups=[0, 1, 2])
    with pytest.raises(ValueError, match="background= does not apply to token inputs"):
        livexai.lime(model, IDS, background=IDS[None])
    with pytest.raises(ValueError, match="removal must be 'replace' or 'delete'"):
        livexai.lime(model, IDS, removal="drop")
    with pytest.raises(ValueError, match="one sequence of token ids"):
        livexai.kernel_shap(model, torch.stack([IDS, IDS]))
    with pytest.raises(ValueError, match="layer= applies to token inputs"):
        livexai.integrated_gradients(nn.Linear(4, 2), torch.ones(4), layer="weight")
    with pytest.raises(ValueError, match=r"no nn\.MultiheadAttention"):
        livexai.attention(model, IDS)


def test_a_model_without_pad_id_needs_a_mask_token() -> None:
    model = BagOfEmbeddings().eval()
    model.pad_token_id = None
    with pytest.raises(ValueError, match="pass mask_token_id="):
        livexai.kernel_shap(model, IDS[:6])
    explanation = livexai.kernel_shap(model, IDS[:6], target=0, mask_token_id=PAD)
    torch.testing.assert_close(
        explanation.attributions, model.contributions(IDS[:6], 0), atol=1e-5, rtol=1e-4
    )


def test_integer_rows_for_a_model_without_an_embedding_are_still_tabular() -> None:
    model = nn.Sequential(nn.Linear(3, 2)).eval()
    explanation = livexai.kernel_shap(model, torch.tensor([1, 2, 3]), background=torch.zeros(1, 3))
    assert explanation.attributions.shape == (3,) and explanation.segments is None
