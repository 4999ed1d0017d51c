"""Project checkpoints of score networks ({"format": "pipeline-ckpt-v1", params, model, ema, step}): make, check, load."""
from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from pipeline.config import ParamsError, validate_schema
from pipeline.models.zoo import build

FORMAT = "pipeline-ckpt-v1"
LEGACY_PICKLES = 5  # torch.save before PyTorch 1.6: magic number, protocol, sys info, the object, storage keys; raw data
# The most bytes of pickle the pre-check reads: a checkpoint's pickle holds its object structure only (each tensor is a
# ~120-byte reference to a storage kept in another zip member, or after the legacy pickles), so NCSN++ deep's
# model + EMA (1,926 tensors), the largest preset, is a 225 KB data.pkl; 16 MiB is ~70x that, ~140,000 tensors. A
# larger declared size (a deflate bomb) is refused unread, and no length field of a crafted pickle reads past it: the
# pre-check holds at most 16 MiB + one 1 MiB block, and walks at most 16 MiB of opcodes (~6 s of pickletools for a
# file of 1-byte opcodes, the slowest case; 64 MiB would allow ~25 s).
MAX_PICKLE_BYTES = 16 << 20


class _Bounded:
    """The next `limit` bytes of a binary stream as pickletools.genops reads them, fetched in blocks: a read asking for
    more than the bound or the stream holds (a pickle opcode declaring a 4 GB string) returns nothing, never allocating
    or reading it, and genops reports the pickle as ending early. Memory: at most `limit` + one block."""

    BLOCK = 1 << 20

    def __init__(self, f, limit: int):
        self.f, self.left = f, limit  # left: bytes not yet taken from f
        self.data, self.pos = b"", 0  # the fetched bytes not yet read start at pos

    def _fill(self, n: int) -> bool:
        """Whether n bytes past pos are fetched, fetching blocks (never more than `left` in all) as needed."""
        have = len(self.data) - self.pos
        if have >= n:
            return True
        if n - have > self.left:
            return False
        parts = [self.data[self.pos:]]
        while have < n and self.left:
            block = self.f.read(min(self.left, max(self.BLOCK, n - have)))
            self.left = self.left - len(block) if block else 0
            parts.append(block)
            have += len(block)
        self.data, self.pos = b"".join(parts), 0
        return have >= n

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or not self._fill(n):
            return b""  # data ending early
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def readline(self, limit: int = -1) -> bytes:  # text arguments (GLOBAL's module and name, INT, FLOAT)
        while (end := self.data.find(b"\n", self.pos)) < 0 and self.left and self._fill(len(self.data) - self.pos + 1):
            pass
        end = len(self.data) if end < 0 else end + 1
        line, self.pos = self.data[self.pos:end], end
        return line


class CheckpointError(Exception):
    """A checkpoint that cannot be used: the message names the file (where known) and what is wrong."""


class CheckpointMismatch(CheckpointError):
    """Weights that do not fit the network: a missing or extra key, or a shape mismatch (the message names the key)."""


def _pickles_complete(f, count: int) -> bool:
    """Whether `count` pickles follow in `f`, each well-formed up to its STOP (pickletools decodes, never runs, them)."""
    try:
        for _ in range(count):
            for _ in pickletools.genops(f):
                pass
    except Exception:  # noqa: BLE001 - unknown opcode, data ending early: not pickles
        return False
    return True


def _is_legacy(f) -> bool:
    """Whether `f` starts with the pickle of torch's magic number, as the legacy format does."""
    try:
        return any(arg == torch.serialization.MAGIC_NUMBER for _, arg, _ in pickletools.genops(io.BytesIO(f.read(64))))
    except Exception:  # noqa: BLE001 - not a pickle
        return False


def torch_file_problem(path: str | Path) -> str | None:
    """Why `path` cannot be a file that torch.save wrote (a few words), or None; nothing in it is unpickled.

    torch.save writes a zip archive holding `<name>/data.pkl` (PyTorch >= 1.6), or five pickles starting with torch's
    magic number followed by raw tensor data (the legacy format of older checkpoints, NCSN's among them). Checking
    that the container is whole and its pickles well-formed separates empty, truncated or foreign files from
    checkpoints that torch.load's weights-only mode refuses for the Python objects in them: its error is the same
    for both. At most MAX_PICKLE_BYTES of pickle are read (streamed, never the whole member at once)."""
    too_big = f"its pickle is larger than the {MAX_PICKLE_BYTES >> 20} MiB any checkpoint's object structure needs: corrupt?"
    with open(path, "rb") as f:
        if not f.read(1):
            return "the file is empty"
        f.seek(0)
        if zipfile.is_zipfile(f):
            try:
                with zipfile.ZipFile(f) as z:
                    pkl = [i for i in z.infolist() if i.filename.endswith("/data.pkl") and i.filename.count("/") == 1]
                    if not pkl:
                        return "a zip archive, but not one that torch.save wrote"
                    info = pkl[0]
                    if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                        return "a zip archive, but not one that torch.save wrote (encrypted or compressed data.pkl)"
                    if info.file_size > MAX_PICKLE_BYTES:
                        return too_big
                    with z.open(info) as member:  # ZipExtFile: inflates what is read, at most info.file_size bytes
                        stream = _Bounded(member, info.file_size)
                        return None if _pickles_complete(stream, 1) else "truncated or corrupt?"
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError):
                return "truncated or corrupt?"
        f.seek(0)
        if _is_legacy(f):
            f.seek(0)
            if _pickles_complete(_Bounded(f, MAX_PICKLE_BYTES), LEGACY_PICKLES):
                return None
            return "truncated or corrupt?"
    return "truncated or corrupt?"


def check_torch_file(path: str | Path, fix: str = "") -> Path:
    """`path`, when it is a file that torch.save can have written; else a CheckpointError naming it, what is wrong
    (`torch_file_problem`) and `fix` (appended as it is). Used before every torch.load of a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    problem = torch_file_problem(path)
    if problem:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({problem}){fix}")
    return path


def to_project_checkpoint(params, model_sd: dict, ema_sd: dict | None, step: int) -> dict:
    """The dict that `torch.save` writes as a project checkpoint (the train stage and `import` both write this)."""
    return {"format": FORMAT, "params": params.model_dump(mode="json"), "model": dict(model_sd),
            "ema": None if ema_sd is None else dict(ema_sd), "step": int(step)}


def check_state_dict(net: nn.Module, state: dict, what: str = "weights") -> None:
    """Raise CheckpointMismatch unless `state` has exactly the keys and shapes of net.state_dict()."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise CheckpointMismatch(f"{what}: missing key {missing[0]!r} ({len(missing)} missing) for a {type(net).__name__}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointMismatch(f"{what}: unexpected key {extra[0]!r} ({len(extra)} extra) for a {type(net).__name__}")
    for k, v in expected.items():
        got = getattr(state[k], "shape", None)
        if got != v.shape:
            raise CheckpointMismatch(f"{what}: key {k!r} has shape {tuple(got) if got is not None else type(state[k]).__name__}, "
                                     f"the network expects {tuple(v.shape)}")


def read_project_checkpoint(path: str | Path) -> dict:
    """torch.load (tensors only) and check the project format; any failure is one CheckpointError naming the file."""
    path = check_torch_file(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - zip, pickle and EOF errors all mean "unreadable"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: corrupt, truncated or not a tensors-only checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (convert reference checkpoints with `python -m pipeline import`)")
    for key, kind in (("params", dict), ("model", dict), ("step", int)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    if ckpt.get("ema") is not None and not isinstance(ckpt["ema"], dict):
        raise CheckpointError(f"{path}: field 'ema' is neither a state dict nor None")
    return ckpt


def load(path: str | Path, device: str | torch.device = "cpu", use_ema: bool = True) -> nn.Module:
    """The network of a project checkpoint, in eval mode, with its EMA weights (plain weights where `ema` is None)."""
    ckpt = read_project_checkpoint(path)
    try:
        net = build(validate_schema(ckpt["params"], str(path)))
    except (ParamsError, ValueError) as e:
        raise CheckpointError(f"{path}: stored params do not build a network: {e}") from None
    use = "ema" if use_ema and ckpt["ema"] is not None else "model"
    weights = ckpt[use]
    check_state_dict(net, weights, f"{path} [{use}]")
    net.load_state_dict(weights)
    return net.to(device).eval()
