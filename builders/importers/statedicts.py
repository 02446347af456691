"""Model Zoos checkpoint files -> rows of the registered layout: what an import's worker processes run.

``read_rows(spec, files)`` reads each file once (``torchfile``: numpy views of the tensors, no torch), maps the
state dict's names onto the registered architecture's (``map_state_dict``), checks every shape and dtype, and
writes each tensor into its slice of the row. A file ``torchfile`` leaves to torch (a legacy pre-1.6 file,
bfloat16 tensors) goes to ``torch.load(weights_only=True)``, from the bytes already read: torch is imported only
when such a file turns up (seconds, once per worker process).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ZooError
from zoo.layout import Layout

from . import safepaths, torchfile

#: Why a checkpoint file counts as incomplete when it is not there (``--skip-incomplete`` leaves its model out).
MISSING = "missing (a checkpoint folder holds the state dict in a file named 'checkpoints')"


class IncompleteCheckpoint(ZooError):
    """A checkpoint file that a failed download left empty or cut short (or otherwise unreadable)."""

    def __init__(self, file: Path, why: str) -> None:
        super().__init__(f"{file}: {why}")
        self.file, self.why = file, why

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a worker process, re-raised in the importing one
        return type(self), (self.file, self.why)


@dataclass(frozen=True)
class RowSpec:
    """What turns a checkpoint file into a row: the registered architecture, its layout and input shape."""

    arch: str
    layout: Layout
    in_shape: tuple[int, ...]

    @property
    def where(self) -> str:
        """The architecture as error messages name it (``cnn-s on 1x28x28 inputs``)."""
        return f"{self.arch} on {'x'.join(map(str, self.in_shape))} inputs"


def load_state_dict(file: Path, data: bytes | None = None) -> Mapping[str, np.ndarray]:
    """The state dict in ``file`` (or in ``data``, its bytes when already read) as numpy arrays.

    An empty or unreadable (cut short, damaged) file raises ``IncompleteCheckpoint``; anything but a mapping of
    tensor names to tensors is a ``ZooError``.
    """
    if data is None:
        try:
            data = torchfile.read_file(file)
        except safepaths.Refused as e:
            raise IncompleteCheckpoint(file, e.why) from None
    if not data:
        raise IncompleteCheckpoint(file, torchfile.EMPTY)
    try:
        sd = torchfile.load(data)
    except torchfile.Unreadable as e:
        raise IncompleteCheckpoint(file, e.why) from None
    except torchfile.Unsupported:
        sd = _torch_load(file, data)
    if not isinstance(sd, Mapping) or not all(isinstance(v, np.ndarray) for v in sd.values()):
        raise ZooError(f"{file}: expected a state dict (tensor name -> tensor), got {type(sd).__name__}")
    return sd


def _torch_load(file: Path, data: bytes) -> Any:
    """What ``torchfile`` does not read, through ``torch.load(weights_only=True)``; tensors become numpy arrays
    (floating types numpy lacks, such as bfloat16, as float32: exact)."""
    import torch

    from . import workers

    try:
        torchfile.check_for_torch(data)  # the pickles and sizes, before torch allocates anything for them
    except torchfile.Unreadable as e:
        raise IncompleteCheckpoint(file, e.why) from None
    if workers.IN_WORKER:
        torch.set_num_threads(1)  # one process per CPU already
    try:
        sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch raises for a damaged file
        raise IncompleteCheckpoint(file, torch_refusal(e)) from None
    if not isinstance(sd, Mapping):
        return sd

    def to_numpy(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        v = v.detach()
        if v.numel() * v.element_size() > v.untyped_storage().nbytes():  # a stride-0 view of a few bytes, say
            raise IncompleteCheckpoint(file, f"{torchfile.REFUSED} a tensor of size {tuple(v.shape)} (stride "
                                             f"{v.stride()}) views {v.numel()} values of a storage of "
                                             f"{v.untyped_storage().nbytes()} bytes; a tensor's values must be "
                                             "backed by its storage's bytes")
        if v.is_floating_point() and v.dtype not in (torch.float16, torch.float32, torch.float64):
            v = v.to(torch.float32)
        return v.numpy()

    return {k: to_numpy(v) for k, v in sd.items()}


def torch_refusal(e: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in this reader's words: its weights-only refusal as
    an unsafe pickle naming the global (never its advice to load without ``weights_only``), anything else as a
    damaged file with the first line torch gave."""
    text = str(e).strip()
    if "weights only load failed" in text.lower() or "weights_only" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            module, _, name = found[1].rpartition(".")
            return torchfile.unsafe_global(module, name).why
        return (f"{torchfile.REFUSED} an unsafe pickle (torch's weights-only reader refused it; only tensors and "
                "plain containers are read)")
    detail = text.splitlines()[0] if text else ""
    return f"{torchfile.DAMAGED} ({type(e).__name__}{': ' + detail if detail else ''})"


def _names(file: Path, keys: Sequence[str], spec: RowSpec) -> dict[str, str]:
    """Registered tensor name -> the state dict's key: ``module_list`` CNNs by position among the modules that
    hold parameters, ResNet-18 by name; a key with no place in the layout is an error naming the file."""
    layout, where = spec.layout, spec.where
    if spec.arch == "resnet18":
        names = {k: k for k in keys if not k.endswith("num_batches_tracked")}
    else:
        modules: dict[int, dict[str, str]] = {}
        for key in keys:
            m = re.fullmatch(r"module_list\.(\d+)\.(weight|bias)", key)
            if m is None:
                raise ZooError(f"{file}: unexpected tensor {key!r}; Model Zoos CNNs hold 'module_list.N.weight' "
                               "and 'module_list.N.bias'")
            modules.setdefault(int(m[1]), {})[m[2]] = key
        ours = [name for name, _ in layout.modules()]
        if len(modules) != len(ours):
            raise ZooError(f"{file}: {len(modules)} layers with parameters (module_list indices "
                           f"{sorted(modules)}); {where} has {len(ours)} ({', '.join(ours)})")
        names = {f"{prefix}.{attr}": key for (_, attrs), prefix in zip(sorted(modules.items()), ours)
                 for attr, key in attrs.items()}
    unexpected = sorted(set(names) - set(layout.names))
    if unexpected:
        raise ZooError(f"{file}: tensor {names[unexpected[0]]!r} has no place in {where}")
    missing = next((t.name for t in layout.tensors if t.name not in names), None)
    if missing is not None:
        raise ZooError(f"{file}: no tensor for {missing!r} of {where}")
    return names


def map_state_dict(file: Path, sd: Mapping[str, Any], spec: RowSpec,
                   names: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The checkpoint's tensors under the registered architecture's names, shapes and dtypes checked.

    ``module_list`` CNNs are matched by position among the modules that hold parameters (dropout modules
    shift the indices); ResNet-18 by name (``num_batches_tracked`` is a counter, not a weight). Takes numpy
    arrays or torch tensors; ``names`` is ``_names`` of the same keys, when known.
    """
    if names is None:
        names = _names(file, list(sd), spec)
    out = {}
    for t in spec.layout.tensors:
        found = names[t.name]
        value = sd[found]
        if tuple(value.shape) != t.shape:
            raise ZooError(f"{file}: tensor {found!r} has shape {tuple(value.shape)}; {spec.where} expects "
                           f"{t.shape} for {t.name!r}")
        floating = value.dtype.kind == "f" if isinstance(value, np.ndarray) else value.is_floating_point()
        if not floating:
            raise ZooError(f"{file}: tensor {found!r} has dtype {value.dtype}; expected floating point")
        out[t.name] = value
    return out


def read_rows(spec: RowSpec, files: Sequence[Path]) -> np.ndarray:
    """The checkpoints in ``files`` as float32 rows (len(files), layout size), each file read once."""
    rows = np.empty((len(files), spec.layout.size), dtype=np.float32)
    mappings: dict[tuple[str, ...], dict[str, str]] = {}  # the files of a unit share a few sets of keys
    for row, file in zip(rows, files):
        sd = load_state_dict(file)
        keys = tuple(sd)
        names = mappings.get(keys)
        if names is None:
            names = mappings[keys] = _names(file, keys, spec)
        state = map_state_dict(file, sd, spec, names)
        for t in spec.layout.tensors:
            row[t.offset:t.stop] = state[t.name].reshape(-1)  # float64/float16 are cast as torch's .to(float32)
    return rows
