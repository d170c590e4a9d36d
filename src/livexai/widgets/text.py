"""``TextWidget``: a sentence's tokens coloured by how much each pushes the chosen class, live.

The tokens are drawn as text (never as HTML: a token is data), each on a red (for the class) or blue (against)
background; attention is drawn in one colour, darker where more attention goes. LIME and KernelSHAP stream in as
samples are evaluated; integrated gradients, attention and attention rollout come at once. With a vocabulary or
a tokenizer the sentence is editable: type one, and the explanation follows.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import torch
import traitlets
from typing_extensions import Unpack

from .._adapter import Model, OutputSpace
from .._call import prepare
from .._vocab import encode, token_strings, tokenize
from ..explanation import Explanation
from ..text_plot import is_signed, plot_text
from ._base import ExplainerWidget, WidgetOptions, top_predictions
from ._params import OUTPUT, SEED, ChoiceParam, Fixed, IntParam
from ._runner import JobContext, describe_error
from ._serialize import WireArray, to_wire

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METHODS: tuple[str, ...] = ("lime", "kernel_shap", "integrated_gradients", "attention", "rollout")
TITLES = {
    "lime": "LIME",
    "kernel_shap": "KernelSHAP",
    "integrated_gradients": "Integrated gradients",
    "attention": "Attention",
    "rollout": "Attention rollout",
}
ATTENTION_METHODS = ("attention", "rollout")
MEAN_OF_HEADS = "mean"
LAST_LAYER = "last"  # the attention layer closest to the decision


class TextWire(TypedDict):
    """The sentence as drawn (``TextView`` typedef in ``js/widget.js``): its tokens, which are text (not
    padding), the ground-truth rationale, one value per token, and how to read the values."""

    tokens: list[str]
    content: WireArray  # (T,) uint8
    rationale: WireArray | None  # (T,) uint8, or None
    values: WireArray | None  # (T,) float32 once computed
    signed: bool
    method: str
    title: str
    status: str  # "computing", "partial" or "done"
    note: str
    editable: bool
    sentence: str


class TextOptions(WidgetOptions, total=False):
    """``TextWidget``'s keywords: its parameters and fixed settings."""

    method: str
    n_samples: int
    layer: str
    head: str
    seed: int
    output: OutputSpace


class TextWidget(ExplainerWidget[Explanation]):
    """Explain a sequence model's prediction token by token.

    ``TextWidget(model, ids, *, vocab=None, tokenizer=None, labels=None, rationale=None, **options)``: ``ids``
    the token ids ``(T,)`` (or a tokenizer's mapping), ``vocab`` a word list (index = id) or ``tokenizer`` a
    Hugging Face tokenizer, to show words and to make the sentence editable, ``rationale`` ``(T,)`` bool the
    tokens that really decide the label (underlined). Parameters: ``method`` (``"lime"``, ``"kernel_shap"``,
    ``"integrated_gradients"``, and for models with attention ``"attention"`` and ``"rollout"``), ``n_samples``
    (LIME, KernelSHAP), ``layer`` and ``head`` (attention), ``target``.
    """

    FIXED: ClassVar[dict[str, Fixed]] = {"seed": SEED, "output": OUTPUT}

    kind = traitlets.Unicode("text").tag(sync=True)
    title = traitlets.Unicode("Text").tag(sync=True)
    method = ChoiceParam("lime", "method", choices=lambda widget: widget._methods)
    n_samples = IntParam(
        500,
        "samples",
        low=10,
        high=100_000,
        ui=(50, 3000, 50),
        shown=lambda widget: widget.method in ("lime", "kernel_shap"),
    )
    layer = ChoiceParam(
        LAST_LAYER,
        "layer",
        choices=lambda widget: widget._layers,
        shown=lambda widget: widget.method == "attention",
    )
    head = ChoiceParam(
        MEAN_OF_HEADS,
        "head",
        choices=lambda widget: widget._heads,
        shown=lambda widget: widget.method == "attention",
    )
    text = traitlets.Dict().tag(sync=True)  # a TextWire
    sentence = traitlets.Unicode("").tag(sync=True)  # what the person typed (editable widgets)

    def __init__(
        self,
        model: Model,
        ids: Any,
        *,
        vocab: Sequence[str] | None = None,
        tokenizer: Any = None,
        labels: Any = None,
        rationale: Any = None,
        **options: Unpack[TextOptions],
    ) -> None:
        if vocab is not None and (isinstance(vocab, str) or not isinstance(vocab, Sequence)):
            raise TypeError(f"vocab must be a list of words (index = token id), got {type(vocab).__name__}")
        self._vocab, self._tokenizer = vocab, tokenizer
        # Which word each token belongs to (LIME/KernelSHAP features): a tokenizer's word_ids(), else tokens.
        word_ids = getattr(ids, "word_ids", None)
        self._groups: list[int | None] | None = list(word_ids()) if callable(word_ids) else None
        self._attention_cache: tuple[object, Any] | None = None
        self._rationale = None if rationale is None else torch.as_tensor(rationale).reshape(-1).bool()
        self._methods, self._layers, self._heads = METHODS[:3], (LAST_LAYER,), (MEAN_OF_HEADS,)
        options.setdefault("faithfulness", False)  # deletion curves are drawn for images
        super().__init__(model, ids, labels=labels, **options)
        self.text = self._text_wire()
        self.observe(self._on_sentence, names=["sentence"])

    # -- inputs ------------------------------------------------------------------------------------------------
    def _load_input(self, x: Any, image: Any) -> None:
        """Make the sequence ``x`` the explained input (no display image). Runs the model once."""
        call = prepare(self._adapter, x, target=None, expect="sequence")
        assert call.tokens is not None
        self._x = x
        self._display = None
        self._scores = call.scores
        self._ids = call.x[0].detach().cpu()
        self._content = call.tokens.content.cpu()
        self._tokens = token_strings(self._ids, self._vocab, self._tokenizer)  # what each token is drawn as
        self._attention_cache = None
        if self._rationale is not None and self._rationale.shape != self._ids.shape:
            raise ValueError(
                f"rationale has {self._rationale.numel()} flags for {self._ids.numel()} tokens; give one per token"
            )
        if not self._ready:
            self._offer_attention()

    def _offer_attention(self) -> None:
        """Offer attention and rollout when the model has attention layers (their names join the layer menu)."""
        try:
            found = self._attention()
        except ValueError:
            return
        self._methods = METHODS
        self._layers = (LAST_LAYER, *found.layer_names)
        self._heads = (MEAN_OF_HEADS, *(str(h) for h in range(found.n_heads)))

    def _attention(self) -> Any:
        """The attention of the current input, computed once per input."""
        from ..attention import attention

        if self._attention_cache is None or self._attention_cache[0] is not self._x:
            self._attention_cache = (self._x, attention(self._adapter, self._x))
        return self._attention_cache[1]

    def _on_sentence(self, change: dict[str, Any]) -> None:
        """A typed sentence: tokenise it, explain it; a sentence that cannot be explained is shown as an error."""
        if self._vocab is None and self._tokenizer is None:
            self.error = "this widget was given no vocab or tokenizer, so it cannot read typed text"
            self.status = "error"
            return
        try:
            if self._tokenizer is not None:
                x, self._groups = tokenize(change["new"], self._tokenizer)
            else:
                x, self._groups = encode(change["new"], self._vocab), None  # type: ignore[arg-type]
            self._rationale = None  # the ground truth was for the original sentence
            self._load_input(x, None)
        except Exception as error:  # the widget keeps its sentence and shows why
            self.error = describe_error(error)
            self.status = "error"
            return
        self.predictions = top_predictions(self._scores, self._labels)
        self.text = self._text_wire()
        self.refresh()

    # -- computation -------------------------------------------------------------------------------------------
    def _compute(self, request: dict[str, Any], context: JobContext) -> None:
        began = time.perf_counter()
        method = request["method"]
        if method in ATTENTION_METHODS:
            found = self._attention()
            chosen = -1 if request["layer"] == LAST_LAYER else request["layer"]
            layer = chosen if method == "attention" else None
            head = None if request["head"] == MEAN_OF_HEADS else int(request["head"])
            final = found.explanation(layer=layer, head=head if method == "attention" else None)
        elif method == "integrated_gradients":
            from ..gradients import integrated_gradients

            final = integrated_gradients(
                self._adapter, self._x, target=request["target"], output=self._fixed["output"]
            )
        else:
            final = self._follow(
                context,
                self._sampled(method, request, context),
                lambda result, fraction: (self._text_wire(result, status="partial"), fraction),
                self._show_text,
            )
        context.check_cancel()
        wire = self._text_wire(final, note=_note(final))
        elapsed_ms = (time.perf_counter() - began) * 1000.0
        context.post(lambda: self._finish_text(final, wire, elapsed_ms))

    def _sampled(self, method: str, request: dict[str, Any], context: JobContext) -> Any:
        from ..lime import iter_lime
        from ..shap import iter_kernel_shap

        run = iter_lime if method == "lime" else iter_kernel_shap
        return run(
            self._adapter,
            self._x,
            target=request["target"],
            n_samples=request["n_samples"],
            groups=self._groups,
            check_cancel=context.check_cancel,
            **self._fixed,
        )

    def _show_text(self, wire: TextWire, progress: float) -> None:
        """Apply a partial result (kernel thread)."""
        with self.hold_sync():
            self.text = wire
            self.progress = progress

    def _finish_text(self, explanation: Explanation, wire: TextWire, elapsed_ms: float) -> None:
        with self.hold_sync():
            self.text = wire
            self._finish(explanation, [], elapsed_ms=elapsed_ms, n_evals=explanation.n_evals)

    def _figure(self) -> Figure | None:
        """The current explanation as coloured text (the PNG shown where no kernel runs)."""
        if self.explanation is None:
            return None
        from matplotlib.figure import Figure

        title = TITLES.get(self.explanation.method.removeprefix("attention_"), self.explanation.method)
        return plot_text(
            self.explanation,
            self._tokens,
            rationale=self._rationale,
            content=self._content,
            titles=[title],
            figure=Figure(),  # not pyplot's: nothing is shown as a side effect
        )

    def _text_wire(
        self, result: Explanation | None = None, *, status: str = "done", note: str = ""
    ) -> TextWire:
        """The sentence and, once there, one value per token."""
        editable = self._vocab is not None or self._tokenizer is not None
        method = result.method if result is not None else self.method
        return {
            "tokens": self._tokens,
            "content": to_wire(self._content, "uint8"),
            "rationale": None if self._rationale is None else to_wire(self._rationale, "uint8"),
            "values": None if result is None else to_wire(result.attributions, "float32"),
            "signed": result is not None and is_signed(result),
            "method": method,
            "title": TITLES.get(self.method, method),
            "status": "computing" if result is None else status,
            "note": note,
            "editable": editable,
            "sentence": " ".join(
                t for t, text in zip(self._tokens, self._content.tolist(), strict=True) if text
            ),
        }


def _note(explanation: Explanation) -> str:
    """A line under the tokens: the surrogate's fit, the completeness gap, or the attention layer shown."""
    params = explanation.params
    if "score" in params:
        return f"surrogate R² {float(params['score']):.2f}"
    if explanation.method == "kernel_shap":
        return "exact Shapley values: every coalition evaluated" if params.get("exact") else ""
    if "delta" in params:
        return f"completeness gap {float(params['delta']):.2g}"
    if explanation.method == "attention":
        head = params.get("head")
        return f"{params.get('layer')}, {'mean of heads' if head is None else f'head {head}'}"
    if explanation.method == "attention_rollout":
        return "attention rolled out through every layer"
    return ""
