"""Checkpoint files and random-number-generator state, so that a resumed run continues exactly.

A checkpoint file is the ``torch.save`` archive (a zip file) of a dict of tensors and plain values,
whose zip comment records the SHA-256 digest of the archive as torch wrote it (``fastwnll sha256
<64 hex digits>``): it stays a file that ``torch.load`` reads, and the digest covers every byte of
the payload. It is written to a temporary file beside the target, synced to disk and renamed over
the target, so that an interrupted save leaves the previous checkpoint intact. Reading checks the
digest before unpickling anything (``weights_only``: tensors and plain values only), then the
payload's keys and the finiteness of its weights. Files written before the digest existed (an
archive without the comment) still load, with a warning that they carry no checksum.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1  # layout of the payload dict (its "format" entry)
REQUIRED_KEYS = ("config", "num_classes", "in_channels", "epoch", "history", "model", "stage", "rng", "finished")
ZIP_START = b"PK\x03\x04"  # the first bytes of a torch archive
ZIP_END = b"PK\x05\x06"  # the signature of a zip file's last record (22 bytes + the comment)
DIGEST_PREFIX = b"fastwnll sha256 "  # + 64 hex digits: the zip comment of a checkpoint
COMMENT_SIZE = len(DIGEST_PREFIX) + 64


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)


def rng_state(generator: torch.Generator) -> dict:
    """The states of torch's global CPU (and CUDA) generators and of the run's data generator."""
    state = {"torch": torch.get_rng_state(), "data": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def temporary_path(path: str | os.PathLike) -> Path:
    """The temporary file :func:`save_checkpoint` writes before renaming it to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` (tensors, dicts, lists and plain values) with its SHA-256 digest, atomically:
    the bytes go to a temporary file that is synced and then renamed over ``path``, so an
    interruption (a crash, Ctrl-C) at any moment leaves either the previous checkpoint or the new
    one, never a part of one. The temporary file is removed when the save fails."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    archive = buffer.getbuffer()
    if bytes(archive[-22:-18]) != ZIP_END or bytes(archive[-2:]) != b"\0\0":
        raise RuntimeError("torch.save wrote an archive that does not end with a comment-free zip record")
    comment = DIGEST_PREFIX + hashlib.sha256(archive).hexdigest().encode()
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(archive[:-2])  # the archive up to its (empty) comment's length field
            f.write(len(comment).to_bytes(2, "little") + comment)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _verified_bytes(path: Path) -> bytes:
    """The bytes of the checkpoint file ``path`` once its digest matches (CheckpointError if not)."""
    data = path.read_bytes()
    if not data:
        raise CheckpointError(path, "the file is empty (0 bytes), not a checkpoint; it was truncated or never written")
    if not data.startswith(ZIP_START):
        raise CheckpointError(path, "not a fastwnll checkpoint: it is not a torch archive (a zip file)")
    if data[-22:-18] == ZIP_END and data[-2:] == b"\0\0":
        warnings.warn(
            f"{path} has no checksum (written before fastwnll checkpoints carried one); it is loaded "
            "without verification",
            stacklevel=3,
        )
        return data
    end = len(data) - COMMENT_SIZE
    digest = data[end + len(DIGEST_PREFIX) :]
    if (
        data[end : end + len(DIGEST_PREFIX)] != DIGEST_PREFIX
        or data[end - 22 : end - 18] != ZIP_END
        or data[end - 2 : end] != COMMENT_SIZE.to_bytes(2, "little")
    ):
        raise CheckpointError(path, "truncated or damaged: it does not end with the checkpoint's checksum record")
    archive = data[: end - 2] + b"\0\0"  # the archive as torch wrote it, comment-free
    if hashlib.sha256(archive).hexdigest().encode() != digest:
        raise CheckpointError(
            path,
            "checksum mismatch: the SHA-256 of the archive differs from the one recorded "
            "when it was saved; the file is corrupted",
        )
    return data


def _unpickle(path: Path, data: bytes, map_location) -> object:
    """``torch.load`` of verified bytes, its failures turned into one CheckpointError naming ``path``."""
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's message advises weights_only=False; a checkpoint never needs it.
        raise CheckpointError(
            path,
            "it holds Python objects other than tensors and plain values; fastwnll "
            "checkpoints never do, and loading them could run code: refused",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(path, f"the torch archive inside is damaged ({reason})") from None


def check_payload(path: str | os.PathLike, payload) -> dict:
    """``payload`` if it is a complete training checkpoint: a dict with the :data:`REQUIRED_KEYS`,
    ``config`` a dict, ``model`` a dict of tensors whose floating-point entries are all finite.
    Raises CheckpointError naming ``path``, the missing keys or the damaged parameter."""
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"not a fastwnll training checkpoint (it holds a {type(payload).__name__})")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(path, f"not a complete fastwnll training checkpoint: it lacks {', '.join(missing)}")
    if payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            path, f"payload format {payload.get('format')!r}; this fastwnll reads format {FORMAT_VERSION}"
        )
    if not isinstance(payload["config"], dict):
        raise CheckpointError(path, f"its config is a {type(payload['config']).__name__}, not a dict")
    if not isinstance(payload["model"], dict):
        raise CheckpointError(path, f"its model weights are a {type(payload['model']).__name__}, not a state_dict")
    for name, value in payload["model"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"parameter {name!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(path, f"parameter {name!r} holds NaN or infinite values")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read and verify a checkpoint written by :func:`save_checkpoint` (a file, or a run directory
    holding :data:`CHECKPOINT_NAME`).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError (a ValueError): an empty, truncated, foreign or corrupted file (checksum
            mismatch), objects other than tensors and plain values, missing entries, or weights with
            NaN/infinite values; the message names the file and the problem.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file")
    return check_payload(path, _unpickle(path, _verified_bytes(path), map_location))
