"""Checkpoints that lose nothing and cannot run code: safetensors for tensors, JSON for the rest.

A checkpoint is a pair in one directory::

    ckpt-000012-e0003.safetensors   weights, momentum buffers (``momentum/...``), RNG states (uint8)
    ckpt-000012-e0003.json          {"format", "seq", "tag", "tensors_file", "tensors_sha256",
                                     "tensors_bytes", "saved_at", "state": {...}}

``000012`` is a sequence number (newest = largest), ``e0003`` the caller's tag. Each file is written
to a temporary name in the same directory, flushed and fsync'ed, renamed over with ``os.replace`` and
the directory fsync'ed; the tensors go first and the JSON — which records the tensor file's name,
size and SHA-256 — last, so the JSON is the commit record: a crash at any moment leaves either the
previous checkpoints alone or a pair that :func:`latest_checkpoint` recognises as incomplete and
passes over. Loading never unpickles (safetensors and JSON only). One writer per directory.

Also here: :func:`rng_state` / :func:`restore_rng_state` capture and restore the torch (CPU and
CUDA), numpy and Python generators as tensors + JSON.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

FORMAT = "alexnetc-checkpoint"
VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{6,})-([A-Za-z0-9._-]+)\.json$")
_TAG = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_TMP_PREFIX = ".tmp-ckpt-"
_CHUNK = 1 << 22


PARAM_PREFIX = "param/"  # tensor names of the network's weights; momentum is "momentum/<name>"
STATE_PREFIX = "state/"  # state variables ops update themselves (batch norm's running statistics)


def params_from(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The network's parameters among a checkpoint's tensors, by parameter name."""
    return {k[len(PARAM_PREFIX):]: v for k, v in tensors.items() if k.startswith(PARAM_PREFIX)}


def state_from(tensors: Mapping[str, Any]) -> dict[str, Any]:
    """The network's state variables among a checkpoint's tensors, by name (none before batch norm)."""
    return {k[len(STATE_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}


class CheckpointError(Exception):
    """A checkpoint cannot be written, found, verified or read; the message names the file."""


class CheckpointWriteError(CheckpointError):
    """The machine refused to store a checkpoint (disk full, read-only directory): not the input's fault."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint found in a directory: its JSON file, and ``problem`` (None when it verified)."""
    path: str
    seq: int
    tag: str
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


# --------------------------------------------------------------------------- low-level file helpers

def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


def _tmp_name(directory: str, final: str) -> str:
    return os.path.join(directory, f"{_TMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}-{final}")


def _sha256_file(path: str) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while True:
            b = fh.read(_CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
    return h.hexdigest(), n


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _cpu_tensors(tensors: Mapping[str, Any]) -> dict:
    import torch

    out, storages = {}, set()
    for name, t in tensors.items():
        if not isinstance(name, str) or not name:
            raise CheckpointError(f"tensor names must be non-empty strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"tensors[{name!r}]: expected a torch.Tensor, got {type(t).__name__} "
                                  "(put non-tensor values in the JSON state)")
        t = t.detach()
        if t.device.type != "cpu":
            t = t.to("cpu")
        t = t.contiguous()
        st = t.untyped_storage()
        key = st.data_ptr()
        # safetensors refuses tensors that share memory or are views of a larger buffer: copy those
        if key in storages or st.nbytes() != t.numel() * t.element_size():
            t = t.clone()
            key = t.untyped_storage().data_ptr()
        if t.numel():
            storages.add(key)
        out[name] = t
    return out


# --------------------------------------------------------------------------- save

def save_checkpoint(directory: str | os.PathLike, tensors: Mapping[str, Any], state: Mapping[str, Any],
                    tag: str | int | None = None, keep: int | None = 3,
                    keep_tags: tuple[str, ...] = ()) -> str:
    """Write one checkpoint atomically into ``directory``; return the path of its JSON file.

    ``tensors``: name -> torch.Tensor on any device (saved from CPU copies; any dtype safetensors
    knows, bf16 and integer included). ``state``: anything JSON (numpy scalars/arrays are converted;
    NaN/inf kept). ``tag``: a label for the file name ([A-Za-z0-9._-]; an int becomes ``s<int>``;
    default: the sequence number). ``keep``: keep only the newest ``keep`` complete checkpoints
    (None: keep all), except those whose tag is in ``keep_tags``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    from ..atomic import os_error_of, write_problem

    directory = str(directory)
    if tag is None:
        tag = "ckpt"
    elif isinstance(tag, int) and not isinstance(tag, bool):
        tag = f"s{tag:08d}"
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise CheckpointError(f"checkpoint tag {tag!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    if keep is not None and keep < 1:
        raise CheckpointError(f"keep: expected at least 1 checkpoint to keep, got {keep}")
    try:
        state_text = json.dumps(dict(state), default=_json_default, allow_nan=True, indent=1)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint state is not JSON-serialisable: {exc}") from None
    cpu = _cpu_tensors(tensors)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(f"{directory}: cannot create checkpoint directory: {exc.strerror or exc}") from None

    seq = max([i.seq for i in _scan(directory)] + [0]) + 1
    stem = f"ckpt-{seq:06d}-{tag}"
    tensors_name, json_name = stem + ".safetensors", stem + ".json"
    tensors_path, json_path = os.path.join(directory, tensors_name), os.path.join(directory, json_name)
    tmp_t = _tmp_name(directory, tensors_name)
    tmp_j = _tmp_name(directory, json_name)
    try:
        save_file(cpu, tmp_t, metadata={"format": FORMAT, "seq": str(seq), "tag": tag})
        os.chmod(tmp_t, new_file_mode())   # safetensors writes 0600; the record beside it gets the umask's mode
        with open(tmp_t, "rb+") as fh:
            os.fsync(fh.fileno())
        digest, nbytes = _sha256_file(tmp_t)
        os.replace(tmp_t, tensors_path)
        _fsync_dir(directory)
        record = {"format": FORMAT, "version": VERSION, "seq": seq, "tag": tag,
                  "saved_at": time.time(), "tensors_file": tensors_name, "tensors_sha256": digest,
                  "tensors_bytes": nbytes, "tensor_count": len(cpu)}
        text = json.dumps(dict(record, state=json.loads(state_text)), allow_nan=True, indent=1) + "\n"
        with open(tmp_j, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_j, json_path)
        _fsync_dir(directory)
    except BaseException as exc:   # a full disk, or a signal mid-write: no temporary file stays behind
        for p in (tmp_t, tmp_j):
            _unlink(p)
        err = os_error_of(exc) if isinstance(exc, (OSError, SafetensorError)) else None
        if err is None:
            raise
        raise CheckpointWriteError(write_problem(os.path.join(directory, stem), err, "checkpoint")[0]) from None
    _prune(directory, keep, set(keep_tags), current=json_path)
    return json_path


def weights_record(net: Any, classes: list[str], data_config: Mapping[str, Any] | None = None,
                   **extra: Any) -> dict:
    """The record of a checkpoint of weights that no training of ours wrote (an import, a module trained
    in one's own loop): what `eval`, `predict`, `export`, the figures and `--init-from` read, at epoch 0."""
    from ...compiler.pipeline import plain, spec_hash

    spec_data = plain(net.spec)
    if data_config is not None:
        spec_data["data"] = dict(data_config)
    return {"spec": spec_data, "spec_name": net.name, "spec_hash": spec_hash(spec_data), "classes": classes,
            "data_config": spec_data.get("data") or {}, "data_stats": None, "input_shape": list(net.input_shape),
            "epoch": 0, "history": [], **extra}


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file (0666 less the umask): one mode for both files of
    a checkpoint. The umask is read from /proc where it can be (setting it to read it races threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            mask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (this one included): the writer of a temporary file, a lock's owner."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _prune(directory: str, keep: int | None, keep_tags: set, current: str) -> None:
    """Delete checkpoints older than the newest ``keep`` that verify. Never deleted: a checkpoint that
    fails verification (it is evidence, and the user decides), the newest ones that verify (so the last
    good checkpoint always survives, even when the one just written is damaged), tagged ones."""
    infos = _scan(directory)
    referenced = set()
    doomed = []
    if keep is not None:
        ok = {i.path: _verifies(i.path) for i in infos}
        good = [i for i in infos if ok[i.path]]
        newest = {i.path for i in good[-keep:]}
        doomed = [i for i in infos if ok[i.path] and i.path not in newest and i.path != current
                  and i.tag not in keep_tags and i.seq < _seq_of(current)]
    for i in infos:
        if i not in doomed:
            referenced.add(Path(i.path).with_suffix(".safetensors").name)
    for i in doomed:  # JSON first: a half-deleted pair is an incomplete one, never a wrong one
        for p in (i.path, str(Path(i.path).with_suffix(".safetensors"))):
            try:
                os.unlink(p)
            except OSError:
                pass
    # orphans: tensor files whose JSON never got written, and temp files of dead writers
    for e in os.scandir(directory):
        name = e.name
        if name.startswith("ckpt-") and name.endswith(".safetensors") and name not in referenced:
            m = re.match(r"^ckpt-(\d+)-", name)
            if m and int(m.group(1)) < _seq_of(current):
                _unlink(e.path)
    remove_stale_temporaries(directory)
    _fsync_dir(directory)


def remove_checkpoints(directory: str | os.PathLike) -> int:
    """Delete every checkpoint file in `directory` (pairs, orphans, temporary files; a run being
    replaced) and return how many; OSError when one cannot be deleted. No directory: nothing to do."""
    directory = str(directory)
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for e in os.scandir(directory):
        if e.name.startswith(("ckpt-", _TMP_PREFIX)) and e.is_file():
            os.unlink(e.path)
            removed += 1
    return removed


def stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Temporary files of checkpoint writers that no longer run (killed mid-write), by path."""
    out = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return out
    for e in entries:
        m = re.match(re.escape(_TMP_PREFIX) + r"(\d+)-", e.name)
        if m and not pid_alive(int(m.group(1))) and e.is_file(follow_symlinks=False):
            out.append(e.path)
    return out


def remove_stale_temporaries(directory: str | os.PathLike) -> int:
    """Delete the temporary files killed checkpoint writers left (at the next save, and when a training
    starts: a SIGKILL during a large write must not leave its half file until the next checkpoint);
    returns how many bytes were freed."""
    freed = 0
    for p in stale_temporaries(directory):
        try:
            freed += os.path.getsize(p)
            os.unlink(p)
        except OSError:
            pass
    return freed


_VERIFIED: dict[tuple, bool] = {}  # (json path, sizes, mtimes) -> verified: each file is hashed once


def _verifies(json_path: str) -> bool:
    """Whether a checkpoint passes :func:`verify_checkpoint` (cached while its files do not change)."""
    try:
        rec = _read_record(json_path)
        tpath = os.path.join(os.path.dirname(json_path), rec["tensors_file"])
        sj, st = os.stat(json_path), os.stat(tpath)
    except (CheckpointError, OSError):
        return False
    key = (json_path, sj.st_size, sj.st_mtime_ns, st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _VERIFIED:
        try:
            verify_checkpoint(json_path)
            _VERIFIED[key] = True
        except CheckpointError:
            _VERIFIED[key] = False
    return _VERIFIED[key]


def _unlink(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def _seq_of(json_path: str) -> int:
    m = _NAME.match(os.path.basename(json_path))
    return int(m.group(1)) if m else 0


# --------------------------------------------------------------------------- find and verify

def _scan(directory: str) -> list[CheckpointInfo]:
    """Checkpoint JSON files in ``directory``, oldest first (not verified: problem=None)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for n in names:
        m = _NAME.match(n)
        if m:
            out.append(CheckpointInfo(os.path.join(directory, n), int(m.group(1)), m.group(2), None))
    return sorted(out, key=lambda i: i.seq)


def _read_record(json_path: str) -> dict:
    from ..bounded_read import UnreadableFile, read_bounded

    try:
        rec = json.loads(read_bounded(json_path, "MAX_RECORD_BYTES", "checkpoint record").decode("utf-8"))
    except UnreadableFile as exc:
        raise CheckpointError(str(exc).replace("no such checkpoint record", "no such checkpoint file")) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{json_path}: not valid JSON (truncated or corrupt checkpoint?): {str(exc)[:80]}") from None
    except RecursionError:
        raise CheckpointError(f"{json_path}: JSON nested too deeply to be a checkpoint record") from None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not an alexnetc checkpoint (no \"format\": \"{FORMAT}\")")
    if rec.get("version") != VERSION:
        raise CheckpointError(f"{json_path}: checkpoint format version {repr(rec.get('version'))[:20]}, "
                              f"this alexnetc reads version {VERSION}")
    for k, typ in (("tensors_file", str), ("tensors_sha256", str), ("tensors_bytes", int), ("state", dict)):
        if not isinstance(rec.get(k), typ):
            raise CheckpointError(f"{json_path}: checkpoint record lacks {k!r}")
    if os.path.basename(rec["tensors_file"]) != rec["tensors_file"]:
        raise CheckpointError(f"{json_path}: tensors_file must be a plain file name, got {rec['tensors_file']!r}")
    return rec


def verify_checkpoint(json_path: str | os.PathLike) -> dict:
    """The checkpoint's JSON record after checking its tensor file's size and SHA-256.

    Raises :class:`CheckpointError` naming the file at fault.
    """
    from ..bounded_read import UnreadableFile, check_file

    json_path = str(json_path)
    rec = _read_record(json_path)
    tpath = os.path.join(os.path.dirname(json_path), rec["tensors_file"])
    if not os.path.lexists(tpath):
        raise CheckpointError(f"{tpath}: missing (named by {os.path.basename(json_path)})")
    try:
        size = check_file(tpath, "MAX_WEIGHTS_BYTES", "checkpoint tensor file")
    except UnreadableFile as exc:
        raise CheckpointError(str(exc)) from None
    if size != rec["tensors_bytes"]:
        raise CheckpointError(f"{tpath}: {size} bytes, {os.path.basename(json_path)} recorded "
                              f"{rec['tensors_bytes']} (truncated or half-written)")
    digest, _ = _sha256_file(tpath)
    if digest != rec["tensors_sha256"]:
        raise CheckpointError(f"{tpath}: SHA-256 {digest[:12]}… does not match {rec['tensors_sha256'][:12]}… "
                              f"recorded in {os.path.basename(json_path)} (corrupt or from another checkpoint)")
    return rec


def list_checkpoints(directory: str | os.PathLike, verify: bool = True) -> list[CheckpointInfo]:
    """All checkpoints in ``directory``, oldest first, each verified (``problem`` says what is wrong)."""
    out = []
    for i in _scan(str(directory)):
        problem = None
        if verify:
            try:
                verify_checkpoint(i.path)
            except CheckpointError as exc:
                problem = str(exc)
        out.append(CheckpointInfo(i.path, i.seq, i.tag, problem))
    return out


def latest_checkpoint(directory: str | os.PathLike, problems: list | None = None) -> str | None:
    """The JSON path of the newest complete, verified checkpoint in ``directory`` (None if none).

    Newer checkpoints that fail verification are passed over; their messages are appended to
    ``problems`` when a list is given (so the caller can warn about them).
    """
    for i in reversed(_scan(str(directory))):
        try:
            verify_checkpoint(i.path)
            return i.path
        except CheckpointError as exc:
            if problems is not None:
                problems.append(str(exc))
    return None


def checkpoints_dir(path: str) -> str:
    """A run directory's ``checkpoints/`` folder (of a spec's newest run for ``runs/<spec name>``: see
    `versions.newest_run`); any other path unchanged."""
    from .versions import newest_run

    path = newest_run(path)
    if os.path.isdir(path) and os.path.isdir(os.path.join(path, "checkpoints")):
        return os.path.join(path, "checkpoints")
    return path


def newest_verified(directory: str, warn: Callable[[str], None] | None = None) -> str:
    """`latest_checkpoint` of a directory, or CheckpointError listing why none verifies; with `warn`,
    a newer checkpoint passed over is reported through it (`fallback_warning`)."""
    problems: list[str] = []
    found = latest_checkpoint(directory, problems)
    if found is None:
        detail = f": {'; '.join(problems[:3])}" if problems else ""
        raise CheckpointError(f"{directory}: no checkpoint in this directory verifies{detail}")
    if problems and warn is not None:
        warn(fallback_warning(found, problems))
    return found


def fallback_warning(found: str, problems: list[str]) -> str:
    """The warning that `found` was used because newer checkpoints (`problems`) failed verification."""
    return (f"warning: using {found}; {len(problems)} newer checkpoint{'s' if len(problems) != 1 else ''} "
            "failed verification: " + "; ".join(problems[:3]))


# --------------------------------------------------------------------------- load

def load_checkpoint(path: str | os.PathLike, verify: bool = True) -> tuple[dict, dict]:
    """``(tensors, state)`` of a checkpoint: tensors on the CPU, state as saved.

    ``path``: a checkpoint's ``.json`` or ``.safetensors`` file, or a directory (its
    :func:`latest_checkpoint`). Never unpickles. Raises :class:`CheckpointError` naming the file when
    it is missing, incomplete or corrupt.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = str(path)
    if os.path.isdir(path):
        path = newest_verified(path)
    elif path.endswith(".safetensors"):
        cand = path[: -len(".safetensors")] + ".json"
        if not os.path.isfile(cand):
            if not os.path.exists(path):
                raise CheckpointError(f"{path}: no such checkpoint file")
            raise CheckpointError(f"{path}: no {os.path.basename(cand)} beside it (incomplete checkpoint)")
        path = cand
    elif not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file or directory")
    elif not path.endswith(".json"):
        raise CheckpointError(f"{path}: not a checkpoint (expected a ckpt-*.json or .safetensors file, "
                              "or a checkpoint directory)")
    rec = verify_checkpoint(path) if verify else _read_record(path)
    tpath = os.path.join(os.path.dirname(path), rec["tensors_file"])
    try:
        tensors = load_file(tpath, device="cpu")
    except FileNotFoundError:
        raise CheckpointError(f"{tpath}: missing (named by {os.path.basename(path)})") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{tpath}: not a readable safetensors file: {exc}") from None
    return tensors, rec["state"]


def checkpoint_record(path: str | os.PathLike) -> dict:
    """The JSON record of a checkpoint (seq, tag, saved_at, tensors_file, … and "state"), unverified."""
    return _read_record(str(path))


# --------------------------------------------------------------------------- RNG state

def rng_state(prefix: str = "rng/") -> tuple[dict, dict]:
    """The torch (CPU and every initialised CUDA device), numpy-global and Python generators' states.

    Returns ``(tensors, json_state)``: merge the tensors (uint8) into the checkpoint's tensors and
    the JSON into its state; :func:`restore_rng_state` takes them back.
    """
    import random

    import numpy as np
    import torch

    tensors = {prefix + "torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}cuda/{i}"] = s.clone()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"numpy": {"kind": kind, "keys": [int(k) for k in keys], "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)},
             "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss}}
    return tensors, state


def restore_rng_state(tensors: Mapping[str, Any], state: Mapping[str, Any], prefix: str = "rng/") -> None:
    """Restore what :func:`rng_state` captured (CUDA states only for devices that exist)."""
    import random

    import numpy as np
    import torch

    if prefix + "torch" in tensors:
        torch.set_rng_state(tensors[prefix + "torch"].to(torch.uint8).cpu())
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            t = tensors.get(f"{prefix}cuda/{i}")
            if t is not None:
                torch.cuda.set_rng_state(t.to(torch.uint8).cpu(), i)
    n = state.get("numpy")
    if n:
        np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"],
                             n["has_gauss"], n["cached_gaussian"]))
    p = state.get("python")
    if p:
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))

