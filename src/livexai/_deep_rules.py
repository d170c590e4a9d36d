"""DeepLIFT's rules applied to *operations*, not modules: the engine behind :mod:`livexai.deep`.

A network is run twice. The reference pass records, for every non-linear operation, the values it received;
the input pass replays the network and swaps each non-linear operation for an autograd function whose backward
multiplies by DeepLIFT's multiplier, computed from the input's and the reference's values of that same
operation. A ``TorchFunctionMode`` sees every torch call whoever makes it, so a module used twice, an in-place
``nn.ReLU``, an ``nn.ReLU()`` created inside ``forward`` and ``F.relu`` all look the same here: hooking modules
(shap's DeepExplainer, Captum's DeepLift) cannot see the last two and breaks on the first two.

The rules, each exact (the multipliers times the input differences sum to the output difference):
- one-input elementwise functions (ReLU, sigmoid, GELU, exp, ...): the rescale rule ``Δf / Δz``, the derivative
  at the midpoint where ``Δz`` is too small to divide by;
- products, ``matmul``, ``einsum`` of two tensors: the gradient at the midpoint of both operands (exact for
  bilinear functions); division, ``maximum`` and other two-input elementwise functions: each input gets the
  Shapley share of ``Δf`` over the two inputs;
- max pooling and ``max``/``amax`` over dimensions: DeepLIFT's max rule (the difference goes to the input's or
  the reference's arg-max, whichever side is larger), accumulated over overlapping windows;
- softmax and log-softmax: their exact decomposition (exp, sum, reciprocal, product) with a shift shared by input
  and reference;
- layer, group, instance and RMS norms, variance, norms and scaled-dot-product attention: rewritten in the
  operations above and run through the same rules.
Linear operations need no rule: their gradient is their multiplier. Anything else that is not linear is named in
:attr:`InputPass.unsupported`; its gradient is used and the completeness gap shows the cost.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["InputPass", "ReferencePass", "Tape", "TapeMismatch"]

Rule = Callable[["_Pass", Callable, tuple, dict], Any]

# Below this input difference a piecewise-linear function's multiplier is its gradient (Captum's threshold).
_PIECEWISE_TOLERANCE = 1e-10


class TapeMismatch(RuntimeError):
    """The input pass ran other operations than the reference pass (control flow that depends on the input)."""


@dataclass(frozen=True)
class _Step:
    name: str
    tensors: tuple[torch.Tensor, ...]
    versions: tuple[int, ...]  # to notice a tensor kept by reference that the model later changed in place


Tape = list[_Step]


# -- multipliers -------------------------------------------------------------------------------------------------
def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float64 (float32 on Apple's MPS, which has no float64): multipliers are ratios of differences of
    nearby values, whose rounding error in the model's own precision would swamp them."""
    return t.to(torch.float32 if t.device.type == "mps" else torch.float64)


def _tolerance(a: torch.Tensor, b: torch.Tensor, piecewise: bool) -> Any:
    """Input differences at or below this use the derivative at the midpoint instead of the ratio.

    A piecewise-linear function's ratio is exact, so only a zero difference needs the derivative. For a smooth one
    ``sqrt(eps)`` (relative) balances the ratio's rounding error, ``eps |f| / Δz``, against the midpoint
    derivative's error, ``Δz²``."""
    if piecewise:
        return _PIECEWISE_TOLERANCE
    return torch.finfo(a.dtype).eps ** 0.5 * (1 + ((a + b) / 2).abs())


def _slopes(pure: Callable[..., torch.Tensor], points: tuple[torch.Tensor, ...], shape: torch.Size) -> list:
    """The derivative of the elementwise ``pure`` with respect to each argument at ``points``, on ``shape``."""
    with torch.enable_grad():
        leaves = [p.detach().expand(shape).clone().requires_grad_(True) for p in points]
        out = pure(*leaves)
        grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
    return [torch.zeros(shape, dtype=out.dtype, device=out.device) if g is None else g for g in grads]


def _ratio(
    change: torch.Tensor, difference: torch.Tensor, slope: torch.Tensor, tolerance: Any
) -> torch.Tensor:
    """``change / difference`` where the difference is larger than ``tolerance``, else ``slope``."""
    return torch.where(difference.abs() > tolerance, change / difference, slope)  # x/0 is never selected


def _secant(
    pure: Callable,
    z: torch.Tensor,
    reference: torch.Tensor,
    y: torch.Tensor,
    piecewise: bool,
    slope_at: Callable | None = None,
) -> torch.Tensor:
    """The rescale multiplier ``(f(z) - f(z_ref)) / (z - z_ref)`` of an elementwise ``f`` (``y = f(z)``).

    A piecewise-linear ``f``'s ratio is exact in any precision, and where the difference is (about) zero its
    slope at ``z`` is its slope at the midpoint; a smooth one's is taken in float64, with the midpoint slope.
    ``slope_at(points)`` gives ``f'`` directly where known (cheaper than autograd on large activations).
    """
    if piecewise:
        z_work, ref_work, change = z, reference, y - pure(reference)
        middle = z
    else:
        z_work, ref_work = _wide(z), _wide(reference)
        change = pure(z_work) - pure(ref_work)
        middle = (z_work + ref_work) / 2
    slope = slope_at(middle) if slope_at is not None else _slopes(pure, (middle,), z.shape)[0]
    return _ratio(change, z_work - ref_work, slope, _tolerance(z_work, ref_work, piecewise)).to(z.dtype)


# Derivatives known in closed form, by function name (the rest come from autograd).
_SLOPES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": lambda t: (t > 0).to(t.dtype),
}


def _matching(values: Any, like: torch.Tensor) -> Any:
    """``values`` (a tuple or dict of arguments) with floating tensors cast to ``like``'s dtype."""
    cast = lambda v: v.to(like.dtype) if _is_float_tensor(v) and v.dtype != like.dtype else v  # noqa: E731
    if isinstance(values, dict):
        return {key: cast(value) for key, value in values.items()}
    return tuple(cast(value) for value in values)


class _Rescale(torch.autograd.Function):
    """``y = f(z)`` for an elementwise ``f``; backward multiplies by ``(f(z) - f(z_ref)) / (z - z_ref)``."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, reference: torch.Tensor, pure: Callable, piecewise: bool, slope_at: Any
    ) -> Any:
        y = pure(z)
        ctx.save_for_backward(_secant(pure, z, reference, y, piecewise, slope_at))
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None, None, None


class _Bilinear(torch.autograd.Function):
    """``y = f(a, b)`` for ``f`` linear in each argument (product, matmul): backward is the gradient at the
    midpoint of both arguments, which is exact: ``Δf = f(Δa, b̄) + f(ā, Δb)``."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, a_ref: Any, b_ref: Any, pure: Callable) -> Any:
        ctx.pure = pure
        ctx.save_for_backward((a + a_ref) / 2, (b + b_ref) / 2)
        return pure(a, b)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        a_mid, b_mid = ctx.saved_tensors
        needs = ctx.needs_input_grad[:2]
        with torch.enable_grad():
            leaves = [m.detach().requires_grad_(n) for m, n in zip((a_mid, b_mid), needs, strict=True)]
            out = ctx.pure(*leaves)
            wanted = [leaf for leaf in leaves if leaf.requires_grad]
            grads = iter(torch.autograd.grad(out, wanted, grad, allow_unused=True) if wanted else ())
        ga, gb = (next(grads) if n else None for n in needs)
        return ga, gb, None, None, None


class _ShapleyPair(torch.autograd.Function):
    """``y = f(a, b)`` for an elementwise ``f`` of two inputs (division, maximum, ...): each input's multiplier is
    its Shapley share of ``Δf`` (the average of its effect with the other input at the input and at the reference)
    divided by its own difference; the two shares sum to ``Δf`` exactly."""

    @staticmethod
    def forward(ctx: Any, a: Any, b: Any, a_ref: Any, b_ref: Any, pure: Callable, piecewise: bool) -> Any:
        y = pure(a, b)
        a_w, b_w, a_ref_w, b_ref_w = (_wide(t) for t in (a, b, a_ref, b_ref))
        y_w, y_ref = pure(a_w, b_w), pure(a_ref_w, b_ref_w)
        y_a_bref, y_aref_b = pure(a_w, b_ref_w), pure(a_ref_w, b_w)
        share_a = ((y_a_bref - y_ref) + (y_w - y_aref_b)) / 2
        share_b = ((y_aref_b - y_ref) + (y_w - y_a_bref)) / 2
        slope_a, slope_b = _slopes(pure, ((a_w + a_ref_w) / 2, (b_w + b_ref_w) / 2), y.shape)
        multipliers = []
        for share, x, x_ref, slope in ((share_a, a_w, a_ref_w, slope_a), (share_b, b_w, b_ref_w, slope_b)):
            x, x_ref = x.expand(y.shape), x_ref.expand(y.shape)
            tolerance = _tolerance(x, x_ref, piecewise)
            multipliers.append(_ratio(share, x - x_ref, slope, tolerance).to(y.dtype))
        ctx.save_for_backward(*multipliers)
        ctx.shapes = (a.shape, b.shape)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        m_a, m_b = ctx.saved_tensors
        ga, gb = ((grad * m).sum_to_size(shape) for m, shape in zip((m_a, m_b), ctx.shapes, strict=True))
        return ga, gb, None, None, None, None


class _MaxLike(torch.autograd.Function):
    """``y = f(z)`` for a max (or min) over windows or dimensions, with DeepLIFT's max rule (as Captum's, but
    accumulated over overlapping windows, where Captum's unpooling overwrites): the part of ``Δy`` by which the
    input's extreme passes the reference's goes to the input's arg-max, the rest to the reference's."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, reference: torch.Tensor, pure: Callable, largest: bool) -> Any:
        y, y_ref = pure(z), pure(reference)
        ctx.pure, ctx.largest = pure, largest
        ctx.save_for_backward(z, reference, y, y_ref)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        z, reference, y, y_ref = ctx.saved_tensors
        cross = torch.maximum(y, y_ref) if ctx.largest else torch.minimum(y, y_ref)
        with torch.enable_grad():
            z_leaf, ref_leaf = z.detach().requires_grad_(True), reference.detach().requires_grad_(True)
            out, out_ref = ctx.pure(z_leaf), ctx.pure(ref_leaf)
            (to_input,) = torch.autograd.grad(out, z_leaf, grad * (cross - y_ref), retain_graph=True)
            (to_reference,) = torch.autograd.grad(out_ref, ref_leaf, grad * (y - cross))
            (gradient,) = torch.autograd.grad(out, z_leaf, grad)
        multiplied = _ratio(to_input + to_reference, z - reference, gradient, _PIECEWISE_TOLERANCE)
        return multiplied, None, None, None


def _unpool(values: torch.Tensor, indices: torch.Tensor, like: torch.Tensor, spatial: int) -> torch.Tensor:
    """Pooled ``values`` added back at the pooling ``indices`` (flat over the last ``spatial`` dims), like ``like``."""
    flat = like.new_zeros(like.shape).flatten(-spatial)
    flat.scatter_add_(-1, indices.flatten(-spatial), values.flatten(-spatial))
    return flat.view(like.shape)


class _MaxPool(torch.autograd.Function):
    """Max pooling with DeepLIFT's max rule, as :class:`_MaxLike`, from the pooling indices of both passes
    (no pooling is recomputed in the backward pass). Returns the values and the input's indices."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, reference: torch.Tensor, pool: Callable, spatial: int) -> Any:
        y, where = pool(z)
        y_ref, where_ref = pool(reference)
        ctx.spatial = spatial
        ctx.save_for_backward(z - reference, y, y_ref, where, where_ref)
        ctx.mark_non_differentiable(where)
        return y, where

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: Any) -> tuple:
        difference, y, y_ref, where, where_ref = ctx.saved_tensors
        cross = torch.maximum(y, y_ref)

        def spread(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
            return _unpool(values, indices, difference, ctx.spatial)

        change = spread(grad * (cross - y_ref), where) + spread(grad * (y - cross), where_ref)
        return _ratio(change, difference, spread(grad, where), _PIECEWISE_TOLERANCE), None, None, None


class _Softmax(torch.autograd.Function):
    """Softmax (or log-softmax) over ``dim`` through its exact decomposition ``e = exp(z - c)``, ``s = Σ e``,
    ``y = e / s`` (``y = z - c - log s``), with one shift ``c`` for input and reference so that it cancels."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, reference: torch.Tensor, dim: int, log: bool) -> Any:
        z_w, ref_w = _wide(z), _wide(reference)
        shift = torch.maximum(z_w.amax(dim, keepdim=True), ref_w.amax(dim, keepdim=True))
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        e, e_ref = torch.exp(z_w - shift), torch.exp(ref_w - shift)
        s, s_ref = e.sum(dim, keepdim=True), e_ref.sum(dim, keepdim=True)
        m_exp = _ratio(
            e - e_ref, z_w - ref_w, torch.exp((z_w + ref_w) / 2 - shift), _tolerance(z_w, ref_w, False)
        )
        ctx.dim, ctx.log = dim, log
        if log:
            m_log = _ratio(
                torch.log(s) - torch.log(s_ref), s - s_ref, 2 / (s + s_ref), _tolerance(s, s_ref, False)
            )
            ctx.save_for_backward(*(t.to(z.dtype) for t in (m_exp, m_log)))
            return torch.log_softmax(z, dim)
        saved = (m_exp, (e + e_ref) / 2, (1 / s + 1 / s_ref) / 2, -1 / (s * s_ref))
        ctx.save_for_backward(*(t.to(z.dtype) for t in saved))
        return torch.softmax(z, dim)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        if ctx.log:
            m_exp, m_log = ctx.saved_tensors
            grad_s = -grad.sum(ctx.dim, keepdim=True) * m_log
            return grad + grad_s * m_exp, None, None, None
        m_exp, e_mid, r_mid, m_reciprocal = ctx.saved_tensors
        grad_s = (grad * e_mid).sum(ctx.dim, keepdim=True) * m_reciprocal
        return (grad * r_mid + grad_s) * m_exp, None, None, None


# -- the passes --------------------------------------------------------------------------------------------------
class _Pass(TorchFunctionMode):
    """Runs every torch call of a forward pass, sending the non-linear ones to their rule."""

    recording: bool

    copy = False

    def __init__(self, tape: Tape) -> None:
        super().__init__()
        self.tape = tape
        self.position = 0
        self.unsupported: set[str] = set()

    def __torch_function__(
        self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        rule = _RULES.get(func)
        if rule is not None:
            return rule(self, func, args, kwargs)
        if _name(func) in _LINEAR:
            return func(*args, **kwargs)
        return self.without_rule(_name(func), func, args, kwargs)

    def without_rule(self, name: str, func: Callable, args: tuple, kwargs: dict) -> Any:
        """Run a non-linear call that has no rule; in the input pass, name it in :attr:`unsupported` when it
        carried a gradient (its plain gradient then stands in for the multiplier)."""
        result = func(*args, **kwargs)
        if not self.recording and _carries_gradient(args, kwargs, result):
            self.unsupported.add(name)
        return result

    def references(self, name: str, *tensors: torch.Tensor, copy: bool = False) -> tuple[torch.Tensor, ...]:
        """The reference pass's values of this operation's inputs (recorded now, in the reference pass).

        The reference pass keeps them by reference (no copy) unless the operation itself overwrites its input
        (``copy``) or the pass copies everything (see :meth:`ReferencePass.overwritten`).
        """
        if self.recording:
            kept = tuple(t.detach().clone() if copy or self.copy else t.detach() for t in tensors)
            self.tape.append(_Step(name, kept, tuple(t._version for t in kept)))
            return tuple(tensors)
        step = self.tape[self.position] if self.position < len(self.tape) else None
        self.position += 1
        if step is None or step.name != name or [t.shape for t in step.tensors] != [t.shape for t in tensors]:
            raise TapeMismatch(
                f"operation {self.position} ({name} on shapes {[tuple(t.shape) for t in tensors]}) differs from the "
                f"reference pass ({step.name if step else 'nothing'}): the model's control flow depends on its "
                "input, so DeepLIFT cannot pair the input's operations with the reference's"
            )
        return step.tensors


class ReferencePass(_Pass):
    """Run a forward pass on reference inputs, recording what each non-linear operation saw.

    With ``copy`` every recorded tensor is copied; without, they are kept by reference, which is faster and
    right unless the model later changes one in place: :meth:`overwritten` says so, and the pass is run again
    with ``copy``.
    """

    recording = True

    def __init__(self, tape: Tape, copy: bool = False) -> None:
        super().__init__(tape)
        self.copy = copy

    def overwritten(self) -> bool:
        """Whether the model changed a tensor in place after this pass recorded it."""
        return any(
            t._version != v for step in self.tape for t, v in zip(step.tensors, step.versions, strict=True)
        )


class InputPass(_Pass):
    """Run a forward pass on the input, replaying ``tape``: gradients then are DeepLIFT's multipliers."""

    recording = False

    def finish(self) -> None:
        """Check that the whole reference pass was replayed."""
        if self.position != len(self.tape):
            raise TapeMismatch(
                f"the input pass ran {self.position} non-linear operations, the reference pass {len(self.tape)}: "
                "the model's control flow depends on its input"
            )


# -- helpers for the rules ---------------------------------------------------------------------------------------
def _name(func: Callable) -> str:
    return getattr(func, "__name__", type(func).__name__)


def _is_float_tensor(value: object) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def _carries_gradient(args: tuple, kwargs: dict, result: object) -> bool:
    """Whether a call took a tensor that depends on the input and returned one (so its rule matters)."""
    outputs = result if isinstance(result, (tuple, list)) else (result,)
    if not any(_is_float_tensor(o) and o.requires_grad for o in outputs):
        return False
    inputs = [*args, *kwargs.values()]
    inputs += [item for value in inputs if isinstance(value, (tuple, list)) for item in value]
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in inputs)


@functools.cache
def _signature(func: Callable) -> inspect.Signature | None:
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _without_inplace(func: Callable, args: tuple, kwargs: dict) -> tuple[tuple, dict, bool]:
    """``args, kwargs`` with an ``inplace`` argument (``F.relu(x, inplace=True)``) turned off, and whether it was on."""
    signature = _signature(func)
    if signature is None or "inplace" not in signature.parameters:
        return args, kwargs, False
    bound = signature.bind(*args, **kwargs)
    inplace = bool(bound.arguments.pop("inplace", False))
    return bound.args, bound.kwargs, inplace


def _unary(piecewise: bool, out_of_place: Callable | None = None) -> Rule:
    """The rescale rule for an elementwise function of its first argument (further arguments are constants)."""

    def rule(mode: _Pass, func: Callable, args: tuple, kwargs: dict) -> Any:
        z = args[0] if args else kwargs.get("input")
        if not _is_float_tensor(z) or not args:
            return func(*args, **kwargs)
        plain, rest_kwargs, inplace = _without_inplace(func, args, kwargs)
        base = out_of_place or func
        inplace = inplace or out_of_place is not None
        rest = plain[1:]

        def pure(t: torch.Tensor) -> torch.Tensor:
            return base(t, *_matching(rest, t), **_matching(rest_kwargs, t))

        (reference,) = mode.references(_name(base), z, copy=inplace)
        if mode.recording or not z.requires_grad:
            return func(*args, **kwargs)
        y = _Rescale.apply(z, reference, pure, piecewise, _SLOPES.get(_name(base)))
        return z.copy_(y) if inplace else y

    return rule


def _reflected(func: Callable) -> Callable:
    """``c / z`` and ``c ** z`` arrive as ``z.__rtruediv__(c)``: the function of ``z`` they compute."""
    name = _name(func)
    if "div" in name:
        return lambda z, c: c / z
    return lambda z, c: c**z


def _binary(kind: str, piecewise: bool = False, out_of_place: Callable | None = None) -> Rule:
    """A two-input rule (``kind``: ``"bilinear"`` or ``"shapley"``). A constant python number makes the call
    linear (products) or a one-input function (``c / z``, ``z ** 2``)."""

    def rule(mode: _Pass, func: Callable, args: tuple, kwargs: dict) -> Any:
        if len(args) < 2 or kwargs.get("rounding_mode") is not None:
            return func(*args, **kwargs)
        a, b = args[0], args[1]
        base = out_of_place or func
        if not _is_float_tensor(a) or not _is_float_tensor(b):
            return _one_tensor(mode, func, base, args, kwargs)
        a_ref, b_ref = mode.references(f"{kind}:{_name(base)}", a, b, copy=out_of_place is not None)
        if mode.recording or not (a.requires_grad or b.requires_grad):
            return func(*args, **kwargs)
        rest = args[2:]

        def pure(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return base(x, y, *_matching(rest, x), **_matching(kwargs, x))

        if kind == "bilinear":
            out = _Bilinear.apply(a, b, a_ref, b_ref, pure)
        else:
            out = _ShapleyPair.apply(a, b, a_ref, b_ref, pure, piecewise)
        return a.copy_(out) if out_of_place is not None else out

    return rule


def _one_tensor(mode: _Pass, func: Callable, base: Callable, args: tuple, kwargs: dict) -> Any:
    """A two-input function called with one float tensor: linear for products and ``z / c``; the rescale rule
    for ``c / z``, ``c ** z`` and ``z ** c``; anything else is named unsupported."""
    name = _name(func)
    a = args[0]
    if name in ("__rtruediv__", "__rdiv__", "__rpow__") and _is_float_tensor(a):
        return _unary(piecewise=False)(mode, _reflected(func), args, kwargs)
    if "pow" in name and _is_float_tensor(a):
        return _unary(piecewise=False, out_of_place=None if base is func else base)(mode, func, args, kwargs)
    linear = any(part in name for part in ("mul", "matmul", "mm", "mv", "inner", "outer", "einsum")) or (
        "div" in name and _is_float_tensor(a)
    )
    return func(*args, **kwargs) if linear else mode.without_rule(name, func, args, kwargs)


def _max_like(largest: bool) -> Rule:
    """DeepLIFT's max rule for pools and reductions; calls that return indices get them too."""

    def rule(mode: _Pass, func: Callable, args: tuple, kwargs: dict) -> Any:
        z = args[0] if args else kwargs.get("input")
        if not _is_float_tensor(z) or (len(args) > 1 and isinstance(args[1], torch.Tensor)):
            return _binary("shapley", piecewise=True)(mode, func, args, kwargs)
        (reference,) = mode.references(_name(func), z)
        if func in _POOLS:
            return _pool(mode, func, args, kwargs, z, reference)
        result = func(*args, **kwargs)
        if mode.recording or not z.requires_grad:
            return result
        rest = args[1:]

        def pure(t: torch.Tensor) -> torch.Tensor:
            out = func(t, *rest, **kwargs)
            return out[0] if isinstance(out, tuple) else out

        values = _MaxLike.apply(z, reference, pure, largest)
        return type(result)((values, *result[1:])) if isinstance(result, tuple) else values

    return rule


def _pool(
    mode: _Pass, func: Callable, args: tuple, kwargs: dict, z: torch.Tensor, reference: torch.Tensor
) -> Any:
    """Max pooling (``F.max_pool2d`` and kin): the pooling indices of both passes carry the max rule."""
    index, spatial = _POOLS[func]
    wanted = args[index] if len(args) > index else kwargs.get("return_indices", False)
    if mode.recording or not z.requires_grad:
        return func(*args, **kwargs)
    head, tail = args[1:index], {key: value for key, value in kwargs.items() if key != "return_indices"}

    def pool(t: torch.Tensor) -> Any:
        return func(t, *head, return_indices=True, **tail)

    values, where = _MaxPool.apply(z, reference, pool, spatial)
    return (values, where) if wanted else values


def _softmax(log: bool) -> Rule:
    def rule(mode: _Pass, func: Callable, args: tuple, kwargs: dict) -> Any:
        z = args[0] if args else kwargs["input"]
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        dtype = kwargs.get("dtype")
        if dim is None:  # the legacy implicit dimension of F.softmax
            dim = 0 if z.ndim in (0, 1, 3) else 1
        if dtype is not None:
            z = z.to(dtype)
        (reference,) = mode.references("softmax", z)
        if mode.recording or not z.requires_grad:
            return torch.log_softmax(z, dim) if log else torch.softmax(z, dim)
        return _Softmax.apply(z, reference, dim, log)

    return rule


def _rewritten(decomposition: Callable[..., Any]) -> Rule:
    """Run ``decomposition`` (plain torch code) with the mode active, so its operations meet their rules.

    A decomposition returns a zero-argument function to run, None when the call is linear as it stands (batch norm
    in eval mode), or NotImplemented when it has no rule for these arguments.
    """

    def rule(mode: _Pass, func: Callable, args: tuple, kwargs: dict) -> Any:
        try:
            rewritten = decomposition(*args, **kwargs)
        except TypeError:  # a calling form the decomposition does not know
            rewritten = NotImplemented
        if rewritten is NotImplemented:
            return mode.without_rule(_name(func), func, args, kwargs)
        if rewritten is None:
            return func(*args, **kwargs)
        with mode:
            return rewritten()

    return rule


# -- decompositions ----------------------------------------------------------------------------------------------
def _normalise(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    centred = x - x.mean(dims, keepdim=True)
    return centred * torch.rsqrt((centred * centred).mean(dims, keepdim=True) + eps)


def _layer_norm(
    input: Any, normalized_shape: Any, weight: Any = None, bias: Any = None, eps: float = 1e-5
) -> Any:
    dims = tuple(range(-len(tuple(normalized_shape)), 0))

    def run() -> torch.Tensor:
        out = _normalise(input, dims, eps)
        out = out * weight if weight is not None else out
        return out + bias if bias is not None else out

    return run


def _group_norm(input: Any, num_groups: int, weight: Any = None, bias: Any = None, eps: float = 1e-5) -> Any:
    def run() -> torch.Tensor:
        grouped = input.reshape(input.shape[0], num_groups, -1)
        out = _normalise(grouped, (-1,), eps).reshape(input.shape)
        channel = (1, -1) + (1,) * (input.ndim - 2)
        out = out * weight.reshape(channel) if weight is not None else out
        return out + bias.reshape(channel) if bias is not None else out

    return run


def _instance_norm(
    input: Any,
    running_mean: Any = None,
    running_var: Any = None,
    weight: Any = None,
    bias: Any = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Any:
    if not use_input_stats:
        return NotImplemented
    return _group_norm(input, input.shape[1], weight, bias, eps)


def _rms_norm(input: Any, normalized_shape: Any, weight: Any = None, eps: float | None = None) -> Any:
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    eps = torch.finfo(input.dtype).eps if eps is None else eps

    def run() -> torch.Tensor:
        out = input * torch.rsqrt((input * input).mean(dims, keepdim=True) + eps)
        return out * weight if weight is not None else out

    return run


def _batch_norm(
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Any:
    # In eval mode batch norm is an affine map (linear); with batch statistics it mixes the inputs of a batch.
    return NotImplemented if training else None


def _attention(
    query: Any,
    key: Any,
    value: Any,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Any:
    if dropout_p:
        return NotImplemented

    def run() -> torch.Tensor:
        k, v = key, value
        if enable_gqa and k.shape[-3] != query.shape[-3]:
            repeat = query.shape[-3] // k.shape[-3]
            k, v = k.repeat_interleave(repeat, -3), v.repeat_interleave(repeat, -3)
        factor = scale if scale is not None else 1 / math.sqrt(query.shape[-1])
        scores = torch.matmul(query, k.transpose(-2, -1)) * factor
        if is_causal:
            n, m = query.shape[-2], k.shape[-2]
            keep = torch.ones(n, m, dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~keep, float("-inf"))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
        return torch.matmul(torch.softmax(scores, -1), v)

    return run


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention scores with a mask applied: True in a bool mask hides a key, a float mask is added."""
    return scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask


def _multihead_attention(
    query: Any,
    key: Any,
    value: Any,
    embed_dim_to_check: int,
    num_heads: int,
    in_proj_weight: Any,
    in_proj_bias: Any,
    bias_k: Any,
    bias_v: Any,
    add_zero_attn: bool,
    dropout_p: float,
    out_proj_weight: Any,
    out_proj_bias: Any,
    training: bool = True,
    key_padding_mask: Any = None,
    need_weights: bool = True,
    attn_mask: Any = None,
    use_separate_proj_weight: bool = False,
    q_proj_weight: Any = None,
    k_proj_weight: Any = None,
    v_proj_weight: Any = None,
    static_k: Any = None,
    static_v: Any = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> Any:
    """``nn.MultiheadAttention``'s functional form as projections, products and a softmax: batched ``(L, N, E)``
    inputs without extra key/value biases, zero attention, static keys or dropout."""
    if (
        query.ndim != 3
        or bias_k is not None
        or bias_v is not None
        or add_zero_attn
        or static_k is not None
        or static_v is not None
        or (training and dropout_p)
    ):
        return NotImplemented
    separate = (q_proj_weight, k_proj_weight, v_proj_weight)
    weights = separate if use_separate_proj_weight else in_proj_weight.chunk(3)
    biases = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)

    def heads(x: torch.Tensor, weight: torch.Tensor, bias: Any) -> torch.Tensor:
        projected = F.linear(x, weight, bias)  # (L, N, E)
        length, batch, _ = projected.shape
        return projected.reshape(length, batch * num_heads, -1).transpose(0, 1)  # (N * heads, L, d)

    def run() -> tuple[torch.Tensor, torch.Tensor | None]:
        length, batch, embed = query.shape
        q, k, v = (heads(t, w, b) for t, w, b in zip((query, key, value), weights, biases, strict=True))
        scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        scores = scores.view(batch, num_heads, length, k.shape[1])
        mask = attn_mask
        if mask is None and is_causal:
            mask = torch.ones(length, k.shape[1], dtype=torch.bool, device=query.device).triu(1)
        if mask is not None:
            scores = _masked(scores, mask.view(-1, num_heads, length, k.shape[1]) if mask.ndim == 3 else mask)
        if key_padding_mask is not None:
            scores = _masked(scores, key_padding_mask.view(batch, 1, 1, -1))
        attention = torch.softmax(scores, dim=-1)
        mixed = torch.matmul(attention.view(batch * num_heads, length, -1), v)  # (N * heads, L, d)
        mixed = mixed.transpose(0, 1).reshape(length, batch, embed)
        output = F.linear(mixed, out_proj_weight, out_proj_bias)
        if not need_weights:
            return output, None
        return output, attention.mean(dim=1) if average_attn_weights else attention

    return run


def _reduction_dims(x: torch.Tensor, dim: Any) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(x.ndim))
    return (dim,) if isinstance(dim, int) else tuple(dim)


def _variance(std: bool) -> Callable[..., Any]:
    def decomposition(
        input: Any, dim: Any = None, unbiased: Any = None, keepdim: bool = False, *, correction: Any = None
    ) -> Any:
        if isinstance(dim, bool):  # the old var(input, unbiased) form
            dim, unbiased = None, dim
        dims = _reduction_dims(input, dim)
        count = math.prod(input.shape[d] for d in dims)
        if correction is None:
            correction = 0 if unbiased is False else 1

        def run() -> torch.Tensor:
            centred = input - input.mean(dims, keepdim=True)
            var = (centred * centred).sum(dims, keepdim=keepdim) / max(count - correction, 0)
            return torch.sqrt(var) if std else var

        return run

    return decomposition


def _vector_norm(
    input: Any, ord: Any = 2, dim: Any = None, keepdim: bool = False, *, dtype: Any = None, out: Any = None
) -> Any:
    if (
        ord not in (2, 2.0, "fro")
        or dtype is not None
        or out is not None
        or not isinstance(input, torch.Tensor)
    ):
        return NotImplemented
    dims = _reduction_dims(input, dim)
    return lambda: torch.sqrt((input * input).sum(dims, keepdim=keepdim))


def _tensor_norm(
    input: Any, p: Any = "fro", dim: Any = None, keepdim: bool = False, out: Any = None, dtype: Any = None
) -> Any:
    return _vector_norm(input, p, dim, keepdim, dtype=dtype, out=out)


def _normalize(input: Any, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None) -> Any:
    if p != 2 or out is not None:
        return NotImplemented
    return lambda: input / torch.clamp_min(torch.sqrt((input * input).sum(dim, keepdim=True)), eps)


# -- the rule table ----------------------------------------------------------------------------------------------
def _functions(*names: str, sources: tuple = (torch, torch.Tensor, F)) -> list[Callable]:
    return [getattr(source, name) for name in names for source in sources if hasattr(source, name)]


_SMOOTH = (
    "sigmoid", "tanh", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal",
    "erf", "erfc", "sin", "cos", "atan", "asinh", "softplus", "gelu", "silu", "mish", "elu", "selu", "celu",
    "logsigmoid", "softsign", "square", "hardswish", "tanhshrink",
)  # fmt: skip
_PIECEWISE = (
    "relu", "relu6", "leaky_relu", "hardtanh", "hardsigmoid", "abs", "clamp", "clip", "clamp_min", "clamp_max",
    "threshold", "prelu", "hardshrink", "softshrink",
)  # fmt: skip


def _rule_table() -> dict[Callable, Rule]:
    rules: dict[Callable, Rule] = {}
    for names, piecewise in ((_SMOOTH, False), (_PIECEWISE, True)):
        for name in names:
            for func in _functions(name):
                rules[func] = _unary(piecewise)
            for func in _functions(f"{name}_", sources=(torch, torch.Tensor, F, torch._C._nn)):
                pure = getattr(F, name, None) or getattr(torch, name)
                rules[func] = _unary(piecewise, out_of_place=pure)
    rules[torch.special.expit] = _unary(False)
    for func in _functions("mul", "multiply", "__mul__", "__rmul__"):
        rules[func] = _binary("bilinear")
    for func in _functions("mul_", "__imul__"):
        rules[func] = _binary("bilinear", out_of_place=torch.mul)
    for func in _functions("matmul", "__matmul__", "mm", "bmm", "mv", "inner", "outer", "dot", "vdot"):
        rules[func] = _binary("bilinear")
    rules[torch.Tensor.__rmatmul__] = lambda mode, func, args, kwargs: _binary("bilinear")(
        mode, torch.matmul, (args[1], args[0]), kwargs
    )
    rules[torch.einsum] = _einsum
    for func in _functions("div", "divide", "true_divide", "__truediv__", "__div__", "atan2", "fmod"):
        rules[func] = _binary("shapley")
    for func in _functions("div_", "__itruediv__", "__idiv__"):
        rules[func] = _binary("shapley", out_of_place=torch.div)
    for func in _functions("__rtruediv__", "__rdiv__", "__rpow__"):
        rules[func] = _binary("shapley")
    for func in _functions("pow", "__pow__", "float_power"):
        rules[func] = _binary("shapley")
    for func in _functions("maximum", "minimum", "fmax", "fmin"):
        rules[func] = _binary("shapley", piecewise=True)
    pools = ("max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d")
    for func in [*_functions(*pools, "adaptive_max_pool3d", sources=(F, torch)), *_functions("amax", "max")]:
        rules[func] = _max_like(largest=True)
    for func in _functions("amin", "min"):
        rules[func] = _max_like(largest=False)
    for func in _functions("softmax", sources=(torch, torch.Tensor, F, torch.special)):
        rules[func] = _softmax(log=False)
    for func in _functions("log_softmax", sources=(torch, torch.Tensor, F, torch.special)):
        rules[func] = _softmax(log=True)
    for func, decomposition in (
        (F.layer_norm, _layer_norm),
        (F.group_norm, _group_norm),
        (F.instance_norm, _instance_norm),
        (F.batch_norm, _batch_norm),
        (F.scaled_dot_product_attention, _attention),
        (F.multi_head_attention_forward, _multihead_attention),
        (F.normalize, _normalize),
        (torch.linalg.vector_norm, _vector_norm),
        (torch.norm, _tensor_norm),
        (torch.Tensor.norm, _tensor_norm),
        *((f, _variance(std=False)) for f in _functions("var")),
        *((f, _variance(std=True)) for f in _functions("std")),
    ):
        rules[func] = _rewritten(decomposition)
    if hasattr(F, "rms_norm"):
        rules[F.rms_norm] = _rewritten(_rms_norm)
    return rules


def _einsum(mode: _Pass, func: Callable, args: tuple, kwargs: dict) -> Any:
    """``einsum`` of two tensors is bilinear; more operands fall back to the gradient (named unsupported)."""
    equation, *operands = args
    if len(operands) == 1 and isinstance(operands[0], (tuple, list)):
        operands = list(operands[0])
    if len(operands) != 2:
        return mode.without_rule(f"einsum with {len(operands)} operands", func, args, kwargs)
    return _binary("bilinear", out_of_place=None)(
        mode, lambda a, b: torch.einsum(equation, a, b), (operands[0], operands[1]), {}
    )


# Max pooling functions: the position of their ``return_indices`` argument and their number of spatial dims.
_POOLS: dict[Callable, tuple[int, int]] = {
    **{getattr(F, f"max_pool{d}d"): (6, d) for d in (1, 2, 3)},
    **{getattr(F, f"adaptive_max_pool{d}d"): (2, d) for d in (1, 2, 3)},
}
_RULES = _rule_table()

# Operations that are linear (or only move values around), so their gradient is their DeepLIFT multiplier.
_LINEAR_NAMES = """
    conv1d conv2d conv3d conv_transpose1d conv_transpose2d conv_transpose3d linear bilinear_ add __add__ __radd__
    __iadd__ add_ sub __sub__ __rsub__ __isub__ sub_ rsub neg __neg__ negative neg_ __pos__ positive
    __getitem__ __setitem__ view view_as reshape reshape_as flatten unflatten permute transpose transpose_ t t_
    swapaxes swapdims movedim moveaxis contiguous cat concat concatenate stack hstack vstack dstack split
    split_with_sizes tensor_split chunk unbind unsqueeze unsqueeze_ squeeze squeeze_ expand expand_as repeat
    repeat_interleave tile sum nansum mean nanmean cumsum avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
    adaptive_avg_pool2d adaptive_avg_pool3d dropout dropout_ dropout1d dropout2d dropout3d alpha_dropout
    feature_alpha_dropout batch_norm pad narrow select index_select gather take take_along_dim masked_fill
    masked_fill_ where flip fliplr flipud roll rot90 clone to type type_as float double half bfloat16 interpolate
    upsample upsample_nearest upsample_bilinear pixel_shuffle pixel_unshuffle unfold fold embedding diagonal
    diag_embed tril triu trace as_strided copy_ fill_ zero_ index_add index_add_ scatter scatter_add scatter_add_
    index_put index_put_ addmm baddbmm addmv addbmm narrow_copy __get__ real imag view_as_real view_as_complex
    channel_shuffle native_channel_shuffle lerp embedding_bag cumulative_trapezoid trapezoid diff
    __rmul__ sum_to_size conj resolve_conj resolve_neg detach requires_grad_ align_to
    unsqueeze_copy select_scatter slice_scatter diagonal_scatter masked_scatter index_copy index_fill _to_copy
"""
_LINEAR = frozenset(_LINEAR_NAMES.split())
