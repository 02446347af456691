"""A module's symmetry spec, derived by tracing it: no table is written by hand.

Hand-written permutation tables are this field's known failure (git re-basin's
ResNet-50 spec, BatchNorm in its PyTorch port), so every architecture's spec is
read off its forward pass. ``derive`` traces the module with ``torch.fx``,
propagates shapes through one example, and labels every axis of every value
with the *space* of hidden units it carries: a Linear or Conv output starts a
new space; ops that keep units apart pass the label through (activations,
pooling, dropout, BatchNorm, LayerNorm, flatten and reshape, transposes); ops
that mix two values tie their spaces (residual addition, concatenation on other
axes, a matmul's contracted axes); the network's input and output tie theirs to
"pinned" (never permuted). Each space left unpinned is a permutation group; the
layout tensors' axes take the spaces the ops bound to them.

What each op allows is recorded on the spaces it touches and decides the
group's nonlinearity (``zoo.symmetry.NONLINEARITIES``):

- An activation allows what ``zoo.symmetry.ACTIVATION_PROPERTIES`` says of
  its name: ReLU and LeakyReLU are positively homogeneous (rescale); tanh,
  sin, softsign, symmetric hardtanh and the shrinks are odd (sign flip);
  max-pooling forbids a sign flip; every other activation (GELU, sigmoid,
  SiLU, ReLU6, ...) allows permutation only. With ``activation`` given (an
  architecture's option), a group followed by exactly that activation is
  "act" ("pool_act" after a max-pool), so one spec serves every activation
  of a zoo.
- BatchNorm follows its channels' permutation; a rescale or sign flip of its
  group moves to its affine weight and bias (the conv before it is normalized
  away), which is exact only when every writer of the group is normalized
  right after it (a plain residual stream), so anything else keeps permutation
  only. LayerNorm commutes with a permutation of the axes it normalizes and
  with nothing else; GroupNorm(G, C) likewise for G = 1 or G = C, and for
  1 < G < C the channels are pinned (conservative: the block structure is not
  derived).
- Depthwise convolutions (groups = in channels) keep their input's space on
  their output (a channel multiplier m gives ``"P*m"``); other grouped
  convolutions pin both sides (conservative). A space crossing a depthwise
  convolution allows permutation only.
- ``nn.MultiheadAttention`` (self-attention, packed projections): a head
  permutation ``<m>.heads`` shared by q, k and v, a permutation ``<m>.qk`` of
  the query/key dimensions within every head (one for q and k: q.k is
  unchanged) and ``<m>.v`` of the value dimensions within every head, shared
  with the output projection's input. Its packed ``in_proj_weight`` axis 0 is
  ``"<m>.heads*<m>.qk|<m>.heads*<m>.qk|<m>.heads*<m>.v"``. The same structure
  is found in hand-written attention (reshape to heads, q @ k^T, softmax, @ v).
  Within-head permutations are drawn once per sample and shared by the heads
  (a subgroup of the full symmetry, still exact).
- Free tensors a module holds (a class token, a position embedding) take the
  space of what they are added to or concatenated with; a group holding one
  allows permutation only.

Anything not understood is conservative: an unknown parameterless op or module
pins the spaces of its inputs (they are simply not permuted) and says so in
``Derived.notes``; an unknown module holding tensors raises ``ZooError`` naming
it, since its tensors' axes cannot be placed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import ZooError
from ..layout import Layout
from ..symmetry import ODD, POSITIVE_HOMOGENEOUS, SymmetrySpec

#: Torch activations by the name ``zoo.symmetry.ACTIVATION_PROPERTIES`` says what each allows under.
_MODULE_ACTIVATIONS: dict[type, str] = {
    nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.GELU: "gelu",
    nn.SiLU: "silu", nn.ReLU6: "relu6", nn.ELU: "elu", nn.SELU: "selu", nn.CELU: "celu", nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid", nn.Softplus: "softplus", nn.Mish: "mish", nn.Softsign: "softsign",
    nn.Hardtanh: "hardtanh", nn.LogSigmoid: "logsigmoid", nn.Tanhshrink: "tanhshrink", nn.Softshrink: "softshrink",
    nn.Hardshrink: "hardshrink",
}
_FUNCTION_ACTIVATIONS: dict[Any, str] = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu", F.leaky_relu: "leaky_relu",
    torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid", F.gelu: "gelu",
    F.silu: "silu", torch.sin: "sin", F.relu6: "relu6", F.elu: "elu", F.hardswish: "hardswish",
    F.softplus: "softplus", F.mish: "mish", F.hardtanh: "hardtanh", F.softsign: "softsign",
    F.hardsigmoid: "hardsigmoid", F.selu: "selu",
}
_METHOD_ACTIVATIONS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh", "sigmoid": "sigmoid",
                       "sigmoid_": "sigmoid", "sin": "sin", "sin_": "sin"}
#: Ops that keep every value where it is and commute with any per-unit scale.
_ELEMENTWISE_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)
_AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                 nn.AdaptiveAvgPool3d)
_MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
                     nn.AdaptiveMaxPool3d)
_PASS_FUNCTIONS = {F.dropout, F.dropout1d, F.dropout2d, torch.neg, operator.neg}
_MAX_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d}
_POOL_FUNCTIONS = _MAX_POOL_FUNCTIONS | {F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d}
_PASS_METHODS = {"contiguous", "clone", "float", "to", "type_as", "detach", "neg", "requires_grad_"}
_RESHAPES = {"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_RESHAPE_FUNCTIONS = {torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze, torch.unflatten}
_ADDS = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub}
_MULS = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div}
_IGNORED = {getattr, operator.getitem, torch._assert, operator.eq, operator.floordiv, operator.mod, len}


class Space:
    """A set of interchangeable units along one axis (a union-find node); it becomes a permutation group unless
    it is pinned."""

    _count = 0

    def __init__(self, size: int, name: str, produced: bool, free: bool = False) -> None:
        Space._count += 1
        self.id = Space._count
        self.size, self.name = size, name
        self.parent: Space | None = None
        self.factors: list[Space] | None = None  # refined into a row-major product of these
        self.owner: Space | None = None  # the space this one is a factor of
        self.pinned = False
        self.produced, self.free = produced, free
        self.facts: set[str] = set()
        self.acts: set[str] = set()
        self.writers: list[bool] = [False] if produced else []  # per writer: normalized right after it
        self.merged = False

    def find(self) -> Space:
        """The union-find root: the space this one was tied to."""
        root = self
        while root.parent is not None:
            root = root.parent
        return root


Factor = tuple[Space | None, int]
Segment = tuple[Factor, ...]
Dim = tuple[Segment, ...]  # the label of one axis of a value: concatenated segments of row-major factors


def _plain(n: int) -> Dim:
    return (((None, n),),)


def _spaced(s: Space) -> Dim:
    return (((s, s.size),),)


def _dim_size(d: Dim) -> int:
    return sum(math.prod(n for _, n in seg) for seg in d)


@dataclass
class Derived:
    """What ``derive`` read off a module: its layout, its symmetry spec, and what it chose not to permute."""

    layout: Layout
    spec: SymmetrySpec
    notes: list[str] = field(default_factory=list)


class _Tracer(fx.Tracer):
    """Leaves are torch.nn's own modules (Sequential and ModuleList are traced through) and any module listed."""

    def __init__(self, leaves: tuple[type, ...]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, qualname)


class _Deriver:
    def __init__(self, module: nn.Module, activation: str | None) -> None:
        self.module = module
        self.activation = activation
        self.params: dict[str, list[Dim | None]] = {}
        self.shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        self.spaces: list[Space] = []
        self.notes: list[str] = []
        self.labels: dict[fx.Node, Any] = {}
        self.const: set[fx.Node] = set()  # values computed from the module's own tensors alone

    # --- spaces ------------------------------------------------------------------------------------------
    def new(self, size: int, name: str, produced: bool = True, free: bool = False) -> Space:
        s = Space(size, name, produced, free)
        self.spaces.append(s)
        return s

    def pin(self, d: Dim | Space | None, why: str = "") -> None:
        if d is None:
            return
        spaces = [d] if isinstance(d, Space) else [s for seg in d for s, _ in seg if s is not None]
        for s in spaces:
            r = s.find()
            if not r.pinned and why and r.produced:
                self.notes.append(f"{r.name}: not permuted ({why})")
            r.pinned = True
            for f in r.factors or ():
                self.pin(f)

    def refine(self, s: Space, extents: Sequence[int]) -> list[Space]:
        r = s.find()
        if r.factors is None:
            r.factors = []
            for i, n in enumerate(extents):
                f = self.new(n, f"{r.name}.{i}", r.produced, r.free)
                f.owner = r
                f.pinned = r.pinned
                r.factors.append(f)
        return r.factors

    def union(self, a: Space, b: Space) -> None:
        ra, rb = a.find(), b.find()
        if ra is rb:
            return
        if ra.size != rb.size:
            raise ZooError(f"derive: {ra.name!r} ({ra.size} units) and {rb.name!r} ({rb.size}) meet on one axis")
        if ra.id > rb.id:
            ra, rb = rb, ra
        if ra.factors is not None or rb.factors is not None:
            fa = ra.factors or self.refine(ra, [f.size for f in rb.factors or ()])
            fb = rb.factors or self.refine(rb, [f.size for f in fa])
            if [f.size for f in fa] != [f.size for f in fb]:
                self.pin(ra, "two different head structures meet")
                self.pin(rb, "two different head structures meet")
            else:
                for x, y in zip(fa, fb):
                    self.union(x, y)
        rb.parent = ra
        ra.merged = True
        ra.pinned |= rb.pinned
        ra.produced |= rb.produced
        ra.free |= rb.free
        ra.facts |= rb.facts
        ra.acts |= rb.acts
        ra.writers += rb.writers
        if ra.pinned:
            self.pin(ra)

    def expand(self, d: Dim) -> Dim:
        """The label with every refined space replaced by its factors."""
        out = []
        for seg in d:
            factors: list[Factor] = []
            for s, n in seg:
                r = s.find() if s is not None else None
                if r is not None and r.factors is not None:
                    factors += self.expand(tuple([tuple((f, f.size) for f in r.factors)]))[0]
                else:
                    factors.append((r, n))
            out.append(tuple(factors))
        return tuple(out)

    def fact(self, d: Dim | None, fact: str = "", act: str = "") -> None:
        """Record an op's property on every space of a label (and on the spaces refined from them)."""
        if d is None:
            return
        for seg in self.expand(d):
            for s, _ in seg:
                if s is None:
                    continue
                r: Space | None = s.find()
                while r is not None:
                    if fact:
                        r.facts.add(fact)
                    if act:
                        r.acts.add(act)
                    r = r.owner.find() if r.owner is not None else None

    # --- unification --------------------------------------------------------------------------------------
    def unify(self, a: Dim, b: Dim) -> Dim:
        """Tie two labels of one axis (equal sizes; a size-1 axis broadcasts and ties nothing)."""
        if _dim_size(a) == 1:
            return b
        if _dim_size(b) == 1:
            return a
        a, b = self.expand(a), self.expand(b)
        if len(a) != len(b) or any(_dim_size((x,)) != _dim_size((y,)) for x, y in zip(a, b)):
            self.pin(a, "concatenations of different structure meet")
            self.pin(b, "concatenations of different structure meet")
            return a
        for sa, sb in zip(a, b):
            self._unify_segment(_merge_ints(sa), _merge_ints(sb))
        return a

    def _unify_segment(self, sa: Segment, sb: Segment) -> None:
        if [n for _, n in sa] != [n for _, n in sb]:
            for one, other in ((sa, sb), (sb, sa)):
                if len(one) == 1 and one[0][0] is not None:
                    parts = self.refine(one[0][0], [n for _, n in other])
                    self._unify_segment(tuple((p, p.size) for p in parts), other)
                    return
            self.pin((sa,), "a reshape that splits units")
            self.pin((sb,), "a reshape that splits units")
            return
        for (x, _), (y, _) in zip(sa, sb):
            if x is None and y is None:
                continue
            if x is None or y is None:
                self.pin(x or y, "tied to the network's input or a fixed axis")
                continue
            self.union(x, y)

    def broadcast(self, values: Sequence[tuple[Dim, ...]]) -> tuple[Dim, ...]:
        """Tie the labels of values combined elementwise (aligned from the right, as broadcasting is)."""
        rank = max(len(v) for v in values)
        out = []
        for k in range(1, rank + 1):
            label: Dim | None = None
            for v in values:
                if len(v) >= k:
                    label = v[-k] if label is None else self.unify(label, v[-k])
            out.append(label)
        return tuple(reversed(out))  # type: ignore[arg-type]

    # --- parameters -----------------------------------------------------------------------------------------
    def bind(self, name: str, axis: int, label: Dim) -> None:
        if name not in self.shapes:
            return
        axes = self.params.setdefault(name, [None] * len(self.shapes[name]))
        axes[axis] = label if axes[axis] is None else self.unify(axes[axis], label)  # type: ignore[arg-type]

    def param_label(self, name: str) -> tuple[Dim, ...]:
        shape = self.shapes[name]
        axes = self.params.setdefault(name, [None] * len(shape))
        for k, n in enumerate(shape):
            if axes[k] is None:
                axes[k] = _spaced(self.new(n, f"{name}:{k}", produced=False, free=True)) if n > 1 else _plain(n)
        return tuple(axes)  # type: ignore[arg-type]

    # --- the walk --------------------------------------------------------------------------------------------
    def run(self, gm: fx.GraphModule) -> None:
        for node in gm.graph.nodes:
            meta = node.meta.get("tensor_meta")
            if node.op == "placeholder":
                self.labels[node] = self._unlabelled(meta)
            elif node.op == "get_attr":
                if node.target in self.shapes:
                    self.labels[node] = self.param_label(node.target)
                    self.const.add(node)
                else:
                    self.labels[node] = self._unlabelled(meta)
                    self.const.add(node)
            elif node.op == "call_module":
                self.labels[node] = self._module(node, gm.get_submodule(node.target), meta)
            elif node.op in ("call_function", "call_method"):
                tensor_inputs = [a for a in node.all_input_nodes if isinstance(self.labels.get(a), tuple)]
                if tensor_inputs and all(a in self.const for a in tensor_inputs):
                    self.const.add(node)
                self.labels[node] = self._op(node, meta)
            elif node.op == "output":  # the network's outputs (a tensor, a tuple or dict of them) are never permuted
                for label in _flat_labels(_a(node)[0] if _a(node) else None, self.labels, node):
                    self.pin(label)

    def _unlabelled(self, meta: Any) -> Any:
        if meta is None:
            return None
        if hasattr(meta, "shape"):
            return tuple(_plain(int(n)) for n in meta.shape)
        if isinstance(meta, (tuple, list)):
            return tuple(self._unlabelled(m) if m is not None and not isinstance(m, (int, float)) else None
                         for m in meta)
        return None

    def _in(self, node: fx.Node, k: int = 0) -> Any:
        """The labels of the node's ``k``-th argument where it is one tensor, else None."""
        arg = _a(node)[k] if len(_a(node)) > k else None
        if isinstance(arg, fx.Node):
            label = self.labels.get(arg)
            if _is_value(label):
                return label
        return None

    # --- modules ---------------------------------------------------------------------------------------------
    def _module(self, node: fx.Node, m: nn.Module, meta: Any) -> Any:
        name = str(node.target)
        x = self._in(node)
        if isinstance(m, nn.Linear):
            return self._linear(name, m, x)
        if isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, nn.modules.conv._ConvTransposeNd):
            return self._conv(name, m, x, meta)
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return self._batchnorm(name, x, node)
        if isinstance(m, nn.LayerNorm):
            k = len(m.normalized_shape)
            for axis in range(k):
                self.bind(f"{name}.weight", axis, x[len(x) - k + axis])
                self.bind(f"{name}.bias", axis, x[len(x) - k + axis])
            for d in x[len(x) - k:]:
                self.fact(d, "fixed")
            return x
        if isinstance(m, nn.GroupNorm):
            self.bind(f"{name}.weight", 0, x[1])
            self.bind(f"{name}.bias", 0, x[1])
            if 1 < m.num_groups < m.num_channels:
                self.pin(x[1], f"GroupNorm {name} with {m.num_groups} groups of {m.num_channels} channels "
                               "(only permutations within and of its groups are exact; not derived)")
            self.fact(x[1], "fixed")
            return x
        if type(m) in _MODULE_ACTIVATIONS:
            act = _MODULE_ACTIVATIONS[type(m)]
            if act == "hardtanh" and float(m.min_val) != -float(m.max_val):  # type: ignore[arg-type]
                act = "hardtanh_asymmetric"  # not odd
            self._activation(x, act)
            return x
        if isinstance(m, nn.PReLU):
            if m.num_parameters > 1:
                self.bind(f"{name}.weight", 0, x[1])
            self._activation(x, "prelu")
            return x
        if isinstance(m, _ELEMENTWISE_MODULES):
            return x if x is not None else self._unlabelled(meta)
        if isinstance(m, _AVG_POOL_MODULES):
            self._check_spatial(x, name)
            return self._pooled(x, meta)
        if isinstance(m, _MAX_POOL_MODULES):
            self._check_spatial(x, name)
            self.fact(x[1] if x else None, "maxpool")
            return self._pooled(x, meta)
        if isinstance(m, nn.Flatten):
            return self._reshaped(x, meta)
        if isinstance(m, nn.MultiheadAttention):
            return self._attention(name, m, node)
        if next(m.parameters(recurse=False), None) is not None or next(m.buffers(recurse=False), None) is not None:
            raise ZooError(f"derive: module {name!r} ({type(m).__name__}) holds tensors and is not understood; "
                           "supported: Linear, Conv1d/2d/3d (any groups), BatchNorm, LayerNorm, GroupNorm, PReLU, "
                           "MultiheadAttention, elementwise activations, pooling, dropout, flatten")
        return self._unknown(node, f"module {name} ({type(m).__name__})", meta)

    def _linear(self, name: str, m: nn.Linear, x: Any) -> tuple[Dim, ...]:
        self.bind(f"{name}.weight", 1, x[-1])
        out = self.new(m.out_features, name)
        self.bind(f"{name}.weight", 0, _spaced(out))
        self.bind(f"{name}.bias", 0, _spaced(out))
        return x[:-1] + (_spaced(out),)

    def _conv(self, name: str, m: Any, x: Any, meta: Any) -> tuple[Dim, ...]:
        self._check_spatial(x, name, at=2)
        c_in, c_out, groups = int(m.in_channels), int(m.out_channels), int(m.groups)
        spatial = tuple(_plain(int(n)) for n in meta.shape[2:])
        if groups == 1:
            self.bind(f"{name}.weight", 1, x[1])
            out = _spaced(self.new(c_out, name))
        elif groups == c_in and c_out % c_in == 0:  # depthwise: channel c feeds outputs c*m .. c*m + m - 1
            mult = c_out // c_in
            seg = self.expand(x[1])
            if len(seg) != 1:
                self.pin(x[1], f"the depthwise convolution {name} reads a concatenation")
                out = _spaced(self.new(c_out, name))
                self.pin(out)
            else:
                out = (_merge_ints(seg[0] + ((None, mult),)),) if mult > 1 else seg
            self.fact(x[1], "depthwise")
        else:
            self.pin(x[1], f"grouped convolution {name} ({groups} groups)")
            out = _spaced(self.new(c_out, name))
            self.pin(out, f"grouped convolution {name} ({groups} groups)")
        self.bind(f"{name}.weight", 0, out)
        self.bind(f"{name}.bias", 0, out)
        return (x[0], out) + spatial

    def _batchnorm(self, name: str, x: Any, node: fx.Node) -> tuple[Dim, ...]:
        for t in ("weight", "bias", "running_mean", "running_var"):
            self.bind(f"{name}.{t}", 0, x[1])
        # a rescale moves to the BatchNorm's affine only if nothing else reads the value it normalizes
        source, shared = node.all_input_nodes[0] if node.all_input_nodes else None, False
        while source is not None:
            shared |= len(source.users) > 1
            if shared or source.op != "call_module" or not isinstance(
                    self.module.get_submodule(str(source.target)), _ELEMENTWISE_MODULES):
                break
            source = source.all_input_nodes[0] if source.all_input_nodes else None
        for seg in self.expand(x[1]):
            for s, _ in seg:
                if s is None:
                    continue
                r = s.find()
                if shared or r.merged or r.factors is not None or r.owner is not None or len(r.writers) != 1:
                    r.facts.add("norm-reads-stream")  # a BatchNorm of a sum: its scale is not its writers'
                else:
                    r.writers = [True]
        return x

    def _attention(self, name: str, m: nn.MultiheadAttention, node: fx.Node) -> Any:
        if not m._qkv_same_embed_dim or m.bias_k is not None:
            raise ZooError(f"derive: {name!r}: MultiheadAttention with separate key/value sizes or add_bias_kv is "
                           "not understood (packed in_proj_weight only)")
        kw = _k(node)
        q: Any = self._in(node, 0) or self.labels.get(kw.get("query"))
        k: Any = self._in(node, 1) or self.labels.get(kw.get("key"))
        v: Any = self._in(node, 2) or self.labels.get(kw.get("value"))
        e_in = self.unify(self.unify(q[-1], k[-1]), v[-1])
        self.unify(k[-2 if m.batch_first else -3], v[-2 if m.batch_first else -3])
        h, d = m.num_heads, m.head_dim
        heads, qk, vd = self.new(h, f"{name}.heads"), self.new(d, f"{name}.qk"), self.new(d, f"{name}.v")
        for s in (heads, qk, vd):
            s.facts.add("fixed")
        qk_seg, v_seg = ((heads, h), (qk, d)), ((heads, h), (vd, d))
        packed: Dim = (qk_seg, qk_seg, v_seg)
        self.bind(f"{name}.in_proj_weight", 1, e_in)
        self.bind(f"{name}.in_proj_weight", 0, packed)
        self.bind(f"{name}.in_proj_bias", 0, packed)
        self.bind(f"{name}.out_proj.weight", 1, (v_seg,))
        out = self.new(m.embed_dim, f"{name}.out_proj")
        self.bind(f"{name}.out_proj.weight", 0, _spaced(out))
        self.bind(f"{name}.out_proj.bias", 0, _spaced(out))
        meta = node.meta.get("tensor_meta")
        weights = self._unlabelled(meta[1]) if isinstance(meta, (tuple, list)) and meta[1] is not None else None
        return (q[:-1] + (_spaced(out),), weights)

    def _activation(self, x: Any, act: str) -> None:
        for d in x or ():
            self.fact(d, act=act)

    def _check_spatial(self, x: Any, name: str, at: int = 2) -> None:
        for d in (x or ())[at:]:
            self.pin(d, f"{name} mixes it along a spatial axis")

    # --- functions and methods ---------------------------------------------------------------------------------
    def _op(self, node: fx.Node, meta: Any) -> Any:
        target = node.target
        method = node.op == "call_method"
        x = self._in(node)
        if target in _IGNORED and not method:
            if target is operator.getitem:
                return self._getitem(node, meta)
            if target is getattr and meta is not None:  # a tensor attribute of a tensor
                attr = _a(node)[1]
                if x is not None and attr == "data":
                    return x
                if x is not None and attr == "T":
                    return tuple(reversed(x))
                if x is not None and attr == "mT" and len(x) >= 2:
                    return tuple(x[:-2]) + (x[-1], x[-2])
                return self._unknown(node, f"attribute .{attr}", meta)
            if meta is not None:
                return self._unknown(node, f"function {getattr(target, '__name__', target)}", meta)
            return None
        if meta is None:
            return None
        if (method and target in _METHOD_ACTIVATIONS) or (not method and target in _FUNCTION_ACTIVATIONS):
            key: Any = target
            act = _METHOD_ACTIVATIONS[key] if method else _FUNCTION_ACTIVATIONS[key]
            if act == "hardtanh":
                low, high = (list(_a(node)[1:3]) + [_k(node).get("min_val", -1.0), _k(node).get("max_val", 1.0)])[:2]
                act = act if low == -high else "hardtanh_asymmetric"
            self._activation(x, act)
            return x
        if (method and target in _PASS_METHODS) or (not method and target in _PASS_FUNCTIONS):
            return self._reshaped(x, meta) if x is not None else self._unlabelled(meta)
        if not method and target in _POOL_FUNCTIONS:
            self._check_spatial(x, str(target.__name__))
            if target in _MAX_POOL_FUNCTIONS:
                self.fact(x[1], "maxpool")
            return self._pooled(x, meta)
        if (method and target in _RESHAPES) or (not method and target in _RESHAPE_FUNCTIONS):
            return self._reshaped(x, meta)
        if (method and target in ("permute", "transpose", "swapaxes", "t", "movedim")) or (
                not method and target in (torch.permute, torch.transpose, torch.swapaxes, torch.t, torch.movedim)):
            return self._permuted(node, x)
        if (method and target in ("expand", "expand_as")) or (not method and target is torch.broadcast_to):
            return tuple(d if _dim_size(d) == int(n) else _plain(int(n))
                         for d, n in zip((None,) * (len(meta.shape) - len(x)) + x, meta.shape))
        if (method and target in ("add", "add_", "sub", "sub_")) or (not method and target in _ADDS):
            return self._add(node, meta)
        if (method and target in ("mul", "mul_", "div", "div_")) or (not method and target in _MULS):
            return self._mul(node, meta)
        if not method and target in (torch.cat, torch.concat):
            return self._cat(node, meta)
        if (method and target in ("mean", "sum", "amax", "max", "amin")) or (
                not method and target in (torch.mean, torch.sum, torch.amax)):
            return self._reduce(node, x, meta, "maxpool" if target in ("amax", "max", torch.amax) else "")
        if (method and target in ("softmax", "log_softmax")) or (not method and target in (
                F.softmax, F.log_softmax, torch.softmax)):
            axis = _k(node).get("dim", _a(node)[1] if len(_a(node)) > 1 else -1)
            self.fact(x[axis], "fixed")
            return x
        if (method and target == "matmul") or (not method and target in (torch.matmul, operator.matmul, torch.bmm)):
            return self._matmul(node, meta)
        if not method and target is F.scaled_dot_product_attention:
            q, k, v = (self._in(node, i) for i in range(3))
            self.fact(self.unify(q[-1], k[-1]), "fixed")
            self.unify(k[-2], v[-2])
            batch = self.broadcast([q[:-2], k[:-2], v[:-2]])
            return batch + (q[-2], v[-1])
        return self._unknown(node, f"{'method' if method else 'function'} "
                                   f"{target if method else getattr(target, '__name__', target)}", meta)

    def _unknown(self, node: fx.Node, what: str, meta: Any) -> Any:
        for a in node.all_input_nodes:
            for label in _flat_labels(self.labels.get(a), self.labels, node):
                self.pin(label, f"{what} is not understood")
        return self._unlabelled(meta)

    def _getitem(self, node: fx.Node, meta: Any) -> Any:
        source = self.labels.get(_a(node)[0]) if isinstance(_a(node)[0], fx.Node) else None
        index = _a(node)[1]
        if source is None:
            return self._unlabelled(meta)
        if not _is_value(source):  # a tuple of values (a module's outputs)
            return source[index] if isinstance(index, int) and index < len(source) else self._unlabelled(meta)
        items = index if isinstance(index, tuple) else (index,)
        if any(isinstance(i, fx.Node) for i in items) or meta is None:
            for d in source:
                self.pin(d, "indexed by a tensor")
            return self._unlabelled(meta)
        if Ellipsis in items:
            at = items.index(Ellipsis)
            fill = len(source) - sum(1 for i in items if i is not None and i is not Ellipsis)
            items = items[:at] + (slice(None),) * fill + items[at + 1:]
        out: list[Dim] = []
        axis = 0
        for i in items:
            if i is None:
                out.append(_plain(1))
                continue
            d = source[axis]
            if isinstance(i, slice) and i == slice(None):
                out.append(d)
            elif isinstance(i, slice):
                self.pin(d, "sliced")
                out.append(_plain(len(range(*i.indices(_dim_size(d))))))
            else:
                self.pin(d, "indexed")
            axis += 1
        out += source[axis:]
        return tuple(out)

    def _permuted(self, node: fx.Node, x: Any) -> tuple[Dim, ...]:
        target = node.target if isinstance(node.target, str) else node.target.__name__
        args = [a for a in _a(node)[1:]]
        n = len(x)
        if target == "t":
            return tuple(reversed(x))
        if target == "permute":
            order = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
            order = _k(node).get("dims", order)
            return tuple(x[int(a) % n] for a in order)
        if target == "movedim":
            src, dst = int(args[0]) % n, int(args[1]) % n
            rest = [d for k, d in enumerate(x) if k != src]
            rest.insert(dst, x[src])
            return tuple(rest)
        a, b = int(args[0]) % n, int(args[1]) % n
        out = list(x)
        out[a], out[b] = out[b], out[a]
        return tuple(out)

    def _add(self, node: fx.Node, meta: Any) -> tuple[Dim, ...]:
        values, scalar = [], False
        for a in _a(node)[:2]:
            if isinstance(a, fx.Node) and _is_value(self.labels.get(a)):
                values.append(self.labels[a])
                if a in self.const:
                    for d in self.labels[a]:
                        self.fact(d, "free")
            else:
                scalar = True
        out = self.broadcast(values)
        if scalar:
            for d in out:
                self.fact(d, "shifted")
        return self._fit(out, meta)

    def _mul(self, node: fx.Node, meta: Any) -> tuple[Dim, ...]:
        """A product ties its operands' units. A constant factor (a scalar, the module's own tensor) keeps a
        per-unit linear map; a product or quotient of two computed values allows permutations only."""
        tensors = [a for a in _a(node)[:2] if isinstance(a, fx.Node) and _is_value(self.labels.get(a))]
        out = self.broadcast([self.labels[a] for a in tensors])
        divided = node.target in (operator.truediv, operator.itruediv, torch.div, "div", "div_")
        divisor = _a(node)[1] if divided and len(_a(node)) > 1 else None
        if (len(tensors) == 2 and not any(a in self.const for a in tensors)) or (
                isinstance(divisor, fx.Node) and divisor in tensors and divisor not in self.const):
            for d in out:
                self.fact(d, "fixed")
        elif divided and tensors and tensors[0] is not _a(node)[0]:  # c / x
            for d in out:
                self.fact(d, "fixed")
        return self._fit(out, meta)

    def _fit(self, labels: tuple[Dim, ...], meta: Any) -> tuple[Dim, ...]:
        shape = [int(n) for n in meta.shape]
        labels = (None,) * (len(shape) - len(labels)) + labels  # type: ignore[assignment]
        return tuple(d if d is not None and _dim_size(d) == n else _plain(n) for d, n in zip(labels, shape))

    def _cat(self, node: fx.Node, meta: Any) -> tuple[Dim, ...]:
        parts = [self.labels[a] for a in _a(node)[0]]
        axis = _k(node).get("dim", _a(node)[1] if len(_a(node)) > 1 else 0) % len(parts[0])
        out = list(parts[0])
        for p in parts[1:]:
            for k in range(len(out)):
                if k != axis:
                    out[k] = self.unify(out[k], p[k])
        segments: list[Segment] = []
        for p in parts:
            segments += list(self.expand(p[axis]))
        out[axis] = tuple(_merge_ints(s) for s in segments)
        for a in _a(node)[0]:
            if a in self.const:
                for d in self.labels[a]:
                    self.fact(d, "free")
        return tuple(out)

    def _reduce(self, node: fx.Node, x: Any, meta: Any, fact: str) -> tuple[Dim, ...]:
        dims = _k(node).get("dim", _a(node)[1] if len(_a(node)) > 1 else None)
        keep = _k(node).get("keepdim", _a(node)[2] if len(_a(node)) > 2 else False)
        if dims is None:
            dims = tuple(range(len(x)))
        dims = {int(d) % len(x) for d in (dims if isinstance(dims, (tuple, list)) else (dims,))}
        out = []
        for k, d in enumerate(x):
            if k in dims:
                self.fact(d, "fixed")  # a reduction over units is invariant to their order, nothing more
                if keep:
                    out.append(_plain(1))
            else:
                out.append(d)
        if fact and len(x) > 2:
            self.fact(x[1], fact)
        return tuple(out)

    def _matmul(self, node: fx.Node, meta: Any) -> tuple[Dim, ...]:
        a, b = self._in(node, 0), self._in(node, 1)
        if a is None or b is None or len(a) < 2 or len(b) < 2:
            return self._unknown(node, "matmul of vectors", meta)
        contracted = self.unify(a[-1], b[-2])
        if not (_a(node)[0] in self.const or _a(node)[1] in self.const):
            self.fact(contracted, "fixed")
        batch = self.broadcast([a[:-2], b[:-2]]) if len(a) > 2 or len(b) > 2 else ()
        return batch + (a[-2], b[-1])

    def _reshaped(self, x: Any, meta: Any) -> tuple[Dim, ...]:
        """The labels of ``x`` reshaped to ``meta``'s shape: dims merge into products and split along factors
        (an unrefined space splits into a product of new spaces: the heads of hand-written attention). A reshape
        that cuts across units pins what it cuts."""
        shape = [int(n) for n in meta.shape]
        src = [d for d in x if _dim_size(d) != 1]
        if [_dim_size(d) for d in src] == [n for n in shape if n != 1]:  # squeeze, unsqueeze, view as is
            it = iter(src)
            return tuple(_plain(1) if n == 1 else next(it) for n in shape)
        factors: list[Factor] = []
        for d in src:
            segs = self.expand(d)
            if len(segs) == 1:
                factors += list(segs[0])
            else:
                self.pin(d, "a concatenation reshaped")
                factors.append((None, _dim_size(d)))
        out: list[Dim] = []
        for n in shape:
            taken: list[Factor] = []
            while factors and math.prod(f for _, f in taken) < n:
                have = math.prod(f for _, f in taken)
                s, f = factors.pop(0)
                if n % have:
                    factors.insert(0, (s, f))
                    break
                need = n // have
                if need % f == 0:
                    taken.append((s, f))
                elif f % need == 0:
                    if s is None:
                        taken.append((None, need))
                        factors.insert(0, (None, f // need))
                    else:
                        first, rest = self.refine(s, [need, f // need])
                        taken.append((first, need))
                        factors.insert(0, (rest, f // need))
                else:
                    factors.insert(0, (s, f))
                    break
            if math.prod(f for _, f in taken) != n:  # the reshape cuts a unit: nothing of it is kept
                for d in x:
                    self.pin(d, "a reshape that splits units")
                return tuple(_plain(m) for m in shape)
            out.append((_merge_ints(tuple(taken)),) if n != 1 else _plain(1))
        return tuple(out)

    def _pooled(self, x: Any, meta: Any) -> tuple[Dim, ...]:
        """Pooling keeps the batch and channel labels; the spatial axes take the output's sizes."""
        return tuple(x[:2]) + tuple(_plain(int(n)) for n in meta.shape[2:])


def _a(node: fx.Node) -> Any:
    """A node's positional arguments, untyped: the walk checks what it reads."""
    return node.args


def _k(node: fx.Node) -> Any:
    """A node's keyword arguments, untyped."""
    return node.kwargs


def _merge_ints(seg: Segment) -> Segment:
    out: list[Factor] = []
    for s, n in seg:
        if s is None and out and out[-1][0] is None:
            out[-1] = (None, out[-1][1] * n)
        elif s is not None or n != 1 or not out:
            out.append((s, n))
    return tuple(out)


def _is_dim(d: Any) -> bool:
    return isinstance(d, tuple) and bool(d) and all(
        isinstance(seg, tuple) and seg and all(isinstance(f, tuple) and len(f) == 2 and isinstance(f[1], int)
                                               and (f[0] is None or isinstance(f[0], Space)) for f in seg)
        for seg in d)


def _is_value(label: Any) -> bool:
    """Whether ``label`` labels one tensor (a tuple of axis labels), not a tuple of tensors."""
    return isinstance(label, tuple) and all(_is_dim(d) for d in label)


def _flat_labels(label: Any, labels: dict, node: fx.Node) -> list[Dim]:
    if isinstance(label, fx.Node):
        label = labels.get(label)
    if label is None:
        return []
    if _is_value(label):
        return list(label)
    if isinstance(label, dict):
        label = tuple(label.values())
    out: list[Dim] = []
    for item in label if isinstance(label, (tuple, list)) else ():
        out += _flat_labels(item, labels, node)
    return out


# --- from spaces to a spec ----------------------------------------------------------------------------------------
def _nonlinearity(r: Space, activation: str | None) -> str:
    facts, acts = set(r.facts), set(r.acts)
    owner = r.owner
    while owner is not None:
        facts |= owner.find().facts
        acts |= owner.find().acts
        owner = owner.find().owner
    blocked = bool(facts & {"fixed", "free", "shifted", "depthwise", "norm-reads-stream"}) or r.free
    normed = [w for w in r.writers]
    if normed and any(normed) and not all(normed):
        blocked = True
    if blocked:
        return "fixed"
    if activation is not None and acts == {activation}:
        return "pool_act" if "maxpool" in facts else "act"
    scale = acts <= POSITIVE_HOMOGENEOUS
    flip = acts <= ODD and "maxpool" not in facts
    return {(True, True): "linear", (True, False): "relu", (False, True): "odd"}.get((scale, flip), "fixed")


def _render(deriver: _Deriver, d: Dim | None, groups: dict[int, str]) -> str | None:
    if d is None:
        return None
    segments = []
    named = False
    for seg in deriver.expand(d):
        factors: list[Factor] = []
        for s, n in seg:
            r = s.find() if s is not None else None
            factors.append((r, n) if r is not None and r.id in groups else (None, n))
        parts = []
        for s, n in _merge_ints(tuple(factors)):
            if s is None:
                parts.append(str(n))
            else:
                parts.append(groups[s.id])
                named = True
        segments.append("*".join(parts))
    return "|".join(segments) if named else None


def derive(module: nn.Module, example: torch.Tensor | Sequence[torch.Tensor], activation: str | None = None,
           leaves: tuple[type, ...] = ()) -> Derived:
    """Layout and symmetry spec of ``module``, traced on ``example`` (a batch the module takes; eval mode and no
    gradient during the trace; the module's mode is restored). ``activation``: the architecture's activation
    option, written as "act" where it alone follows a group. ``leaves``: module types to treat as opaque
    (an unknown one holding tensors raises ``ZooError``)."""
    layout = Layout.from_module(module)
    examples = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    was_training = module.training
    module.eval()
    try:
        try:
            graph = _Tracer(leaves).trace(module)
        except Exception as e:  # fx raises many types for data-dependent control flow
            raise ZooError(f"derive: torch.fx cannot trace {type(module).__name__}: {e}") from None
        gm = fx.GraphModule(module, graph)
        with torch.no_grad():
            ShapeProp(gm).propagate(*examples)
        deriver = _Deriver(module, activation)
        deriver.run(gm)
    finally:
        module.train(was_training)
    return _spec(deriver, layout)


def _spec(deriver: _Deriver, layout: Layout) -> Derived:
    groups: dict[int, str] = {}
    taken: set[str] = set()
    leaves: list[Space] = []
    for s in sorted({s.find().id: s.find() for s in deriver.spaces}.values(), key=lambda s: s.id):
        if s.factors is not None or s.pinned or not s.produced or s.free and not s.produced:
            continue
        leaves.append(s)
    # a group's name is the space's, in the order the forward pass meets it; a tensor's first appearance in the
    # layout orders the groups, so a spec reads like the network
    order: dict[int, int] = {}
    for k, t in enumerate(layout.tensors):
        for d in deriver.params.get(t.name, ()):
            for seg in deriver.expand(d) if d is not None else ():
                for space, _ in seg:
                    if space is not None:
                        order.setdefault(space.find().id, k)
    for s in sorted(leaves, key=lambda s: (order.get(s.id, len(layout.tensors)), s.id)):
        if s.id not in order:
            continue  # a space no stored tensor carries: nothing to permute
        name = s.name.replace("|", "_").replace("*", "_")
        if name.isdigit():  # an nn.Sequential's layer "0": a bare number would read as an extent
            name = f"{name}.units"
        while name in taken:
            name = f"{name}'"
        taken.add(name)
        groups[s.id] = name
    axes: dict[str, tuple] = {}
    for t in layout.tensors:
        labels = deriver.params.get(t.name)
        if labels is None:
            continue
        entries = tuple(_render(deriver, d, groups) for d in labels)
        if any(e is not None for e in entries):
            axes[t.name] = entries
    by_id = {s.id: s for s in leaves}
    nonlinearity = {name: _nonlinearity(by_id[i], deriver.activation) for i, name in groups.items()}
    sizes = {name: by_id[i].size for i, name in groups.items()}
    spec = SymmetrySpec.build(layout, axes, nonlinearity, sizes=sizes)
    return Derived(layout, spec, list(dict.fromkeys(deriver.notes)))
