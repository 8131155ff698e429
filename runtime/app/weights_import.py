"""Published weights into an alexnetc checkpoint: `alexnetc import torchvision-alexnet WEIGHTS -o RUN`
(also torchvision-resnet18, -resnet50 with batch norm's running statistics, and -vgg16).

A weights file is read without running code: ``.safetensors`` through safetensors, anything else
through ``torch.load(weights_only=True)``, which refuses every pickle that is more than containers of
tensors and numbers. What it yields must be a plain state dict: string keys, tensor values. Keys map
onto the spec's layers by an architecture's table (`ARCHITECTURES`); every key must be there and
every shape must be the layer's, or the import stops naming the first that is not. The result is an
ordinary checkpoint (`training.checkpoint.save_checkpoint`, logical parameter names as every run's) in
RUN/checkpoints/, which eval, predict, filters, neighbors and export read like any trained run.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ...compiler.pipeline import plain


class WeightsError(Exception):
    """A weights file that cannot be imported; the message is one line naming the file."""


@dataclass(frozen=True)
class Architecture:
    """A published network: the shipped spec it is, and how its state-dict keys name the spec's layers.

    `layers` maps a spec layer to the state-dict prefix of its tensors (``prefix.weight``): a mapping,
    or a callable that builds it from the spec's layer names (in spec order)."""

    spec: str                                                  # shipped spec name (specs/<spec>.yaml)
    layers: Mapping[str, str] | Callable[[Sequence[str]], Mapping[str, str]]
    about: str
    # The preprocessing the weights were trained with, for the keys the spec's data section leaves
    # out (VGG-16's spec, as the paper, subtracts the training set's mean; the weights need ImageNet's).
    data: Mapping[str, Any] = field(default_factory=dict)

    def prefixes(self, layer_names: Sequence[str]) -> Mapping[str, str]:
        return self.layers(layer_names) if callable(self.layers) else self.layers


_RESNET_LAYER = re.compile(r"(layer[1-4])(_down|_proj)?(?:\.(\d+))?\.(.+)")
_RESNET_SHORTCUT = {"proj": "downsample.0", "proj_bn": "downsample.1"}


def torchvision_resnet_prefixes(layer_names: Sequence[str]) -> dict[str, str]:
    """torchvision's ResNet key prefixes of the layers of specs/resnet18.yaml or resnet50.yaml.

    torchvision numbers each stage's blocks from 0. In the specs a stage's first block, when it has the
    projection shortcut, is its own entry (``layer2_down``, ``layer1_proj``; its projection and that
    projection's batch norm are torchvision's ``downsample.0`` and ``.1``), and the repeated blocks
    after it are numbered from 1 (``layer3.2.conv1``; a single one leaves the number out:
    ``layer2.conv1``); a stage without a projection block (resnet18's stage 1) numbers its repeats from
    1 as well, so they are torchvision's blocks 0 and 1. conv1, bn1 and fc keep their names."""
    parsed = {n: _RESNET_LAYER.fullmatch(n) for n in layer_names}
    with_first = {m.group(1) for m in parsed.values() if m and m.group(2)}
    out = {n: n for n in ("conv1", "bn1", "fc") if n in parsed}
    for name, m in parsed.items():
        if m is None:
            continue
        stage, first, index, rest = m.groups()
        if first:
            out[name] = f"{stage}.0.{_RESNET_SHORTCUT.get(rest, rest)}"
        else:
            out[name] = f"{stage}.{int(index or 1) - (stage not in with_first)}.{rest}"
    return out


def _vgg16_layers() -> dict[str, str]:
    """specs/vgg16.yaml's layers -> torchvision.models.vgg16's `features.i` (every conv, counting the
    ReLU and pooling modules between them) and `classifier.i` (Linear, ReLU, Dropout, ...)."""
    out, i = {}, 0
    for stage, convs in enumerate((2, 2, 3, 3, 3), 1):
        for c in range(1, convs + 1):
            out[f"stage{stage}.conv{c}"] = f"features.{i}"
            i += 2                        # the conv and its ReLU
        i += 1                            # the stage's max-pool
    out.update({"fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"})
    return out


# torchvision's ImageNet normalisation (every model of torchvision.models).
TORCHVISION_DATA = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}

ARCHITECTURES: dict[str, Architecture] = {
    "torchvision-alexnet": Architecture(
        "torchvision-alexnet",
        {"conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
         "conv5": "features.10", "fc6": "classifier.1", "fc7": "classifier.4", "fc8": "classifier.6"},
        "torchvision.models.alexnet's state dict (e.g. alexnet-owt-7be5be79.pth)", data=TORCHVISION_DATA),
    "torchvision-resnet18": Architecture(
        "resnet18", torchvision_resnet_prefixes,
        "torchvision.models.resnet18's state dict (e.g. resnet18-f37072fd.pth)", data=TORCHVISION_DATA),
    "torchvision-resnet50": Architecture(
        "resnet50", torchvision_resnet_prefixes,
        "torchvision.models.resnet50's state dict (e.g. resnet50-0676ba61.pth)", data=TORCHVISION_DATA),
    "torchvision-vgg16": Architecture(
        "vgg16", _vgg16_layers(), "torchvision.models.vgg16's state dict (e.g. vgg16-397923af.pth)",
        data=TORCHVISION_DATA),
}


def read_state_dict(path: str) -> dict[str, Any]:
    """Name -> tensor from a ``.safetensors`` file or a plain pickled state dict, never running code."""
    import warnings

    import torch

    from ..bounded_read import UnreadableFile, check_file

    try:
        check_file(path, "MAX_WEIGHTS_BYTES", "weights file")
    except UnreadableFile as exc:
        raise WeightsError(str(exc)) from None
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return _finite(path, load_file(path, device="cpu"))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"{path}: not a readable safetensors file: {_first_line(exc)}") from None
    try:
        with warnings.catch_warnings():   # torch's own warnings (pickle protocol...) would add lines
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch's own refusals all end here
        raise WeightsError(f"{path}: not a plain state dict of tensors (torch.load(weights_only=True) "
                           f"refused it: {_refusal(exc)})") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: not a plain state dict of tensors (it holds a {type(obj).__name__})")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise WeightsError(f"{path}: not a plain state dict of tensors (key {k!r} holds a "
                               f"{type(v).__name__}; save model.state_dict() itself)")
    return _finite(path, dict(obj))


def _finite(path: str, sd: dict[str, Any]) -> dict[str, Any]:
    """`sd`, after checking that no floating-point tensor in it holds NaN or infinity (a run imported from
    such weights would predict "nan%")."""
    import torch

    for key, t in sd.items():
        bad = int((~torch.isfinite(t)).sum()) if t.is_floating_point() else 0
        if bad:
            raise WeightsError(f"{path}: {key} holds {bad:,} non-finite value{'s' if bad != 1 else ''} (NaN or "
                               f"infinity) of {t.numel():,}; refusing to import them")
    return sd


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _refusal(exc: BaseException) -> str:
    """What torch.load(weights_only=True) objected to, in its own words (the global it would have had to
    call, the opcode it does not run), without its paragraphs of advice; else its first line."""
    import re

    said = ""
    for after in ("WeightsUnpickler error:", "from a trusted source."):   # torch 2.6+'s two wordings
        m = re.search(re.escape(after) + r"(.*?)(?:Check the documentation|$)", str(exc), re.S)
        said = " ".join(m.group(1).split()) if m else ""
        if said:
            break
    return (said.split(". ")[0].rstrip(".") or _first_line(exc))[:300]


def map_state_dict(net: Any, arch: Architecture, sd: Mapping[str, Any],
                   source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The net's logical parameters (``conv1.weight`` ...) and state (``bn1.running_mean`` ...), float32,
    from a state dict under `arch`'s keys: ``<prefix>.<suffix>``, the suffix being the op's argument
    name or its descriptor's `torch_names` entry for it. Every key of the dict must be used, except the
    buffers an op's descriptor lists as `torch_extra`."""
    import torch

    from ...compiler.ops import get_op
    from ..execution.layout import param_layout

    op_of = {info.name: get_op(info.op) for info in net.layers}
    prefixes = arch.prefixes(list(op_of))
    taken: dict[str, dict[str, Any]] = {"param": {}, "state": {}}
    expected: list[str] = []
    allowed: set[str] = set()
    for role, out in taken.items():
        for lp in param_layout(net.graph, role=role):
            prefix = prefixes.get(lp.layer) if lp.layer else None
            if prefix is None:
                raise WeightsError(f"{net.name}: layer {lp.layer} has no counterpart in {arch.about}")
            op = op_of[lp.layer]
            key = f"{prefix}.{op.torch_names.get(lp.argument, lp.argument)}"
            expected.append(key)
            allowed.update(f"{prefix}.{extra}" for extra in op.torch_extra)
            if key not in sd:
                continue
            t = sd[key]
            if tuple(t.shape) != tuple(lp.shape):
                raise WeightsError(f"{source}: {key} has shape {tuple(t.shape)}, layer {lp.layer} of {net.name} "
                                   f"needs {tuple(lp.shape)}")
            if not t.is_floating_point():
                raise WeightsError(f"{source}: {key} holds {t.dtype} values, not floating point")
            out[lp.name] = t.detach().to(torch.float32).contiguous()
    missing = [k for k in expected if k not in sd]
    extra = sorted(set(sd) - set(expected) - allowed)
    if missing or extra:
        what = []
        if missing:
            what.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if extra:
            what.append(f"unexpected {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
        raise WeightsError(f"{source}: not {arch.about}: {'; '.join(what)}")
    return taken["param"], taken["state"]


def read_class_names(path: str | None, classes: int) -> list[str]:
    """Class names in label order: a text file (one per line), a dataset's train folder (its sorted
    subfolders, as ImageFolder and torchvision number them), or class0..classN-1 when not given."""
    from ..bounded_read import UnreadableFile, read_bounded

    if path is None:
        return [f"class{i}" for i in range(classes)]
    if os.path.isdir(path):
        names = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    else:
        try:
            names = [line.strip() for line in read_bounded(path, "MAX_CLASS_LIST_BYTES", "class list")
                     .decode("utf-8").splitlines() if line.strip()]
        except UnreadableFile as exc:
            raise WeightsError(str(exc)) from None
        except UnicodeDecodeError as exc:
            raise WeightsError(f"{path}: cannot read class names: not UTF-8 text ({exc.reason} at byte "
                               f"{exc.start:,})") from None
    if len(names) != classes:
        raise WeightsError(f"{path}: {len(names)} class names, the network has {classes} classes")
    return names


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# What a `--spec` may change of an architecture's shipped spec: how it trains and reads images, not the
# network (names and placement are already outside `network_hash`).
_NOT_NETWORK = ("train", "data")


def _network_only(spec: Mapping[str, Any]) -> str:
    from ..execution.layout import network_hash

    return network_hash({k: v for k, v in plain(spec).items() if k not in _NOT_NETWORK})


def import_weights(arch_name: str, weights: str, out: str, classes: str | None = None,
                   spec: str | None = None) -> str:
    """Import `weights` as architecture `arch_name` into the run directory `out` (which must not hold
    checkpoints yet); returns the checkpoint's JSON path. `spec`: a spec of the same network to import
    into instead of the architecture's shipped one (another data section, e.g. the evaluation resize
    of other published weights; other names or placement)."""
    from ...compiler import compile_spec
    from ..training.checkpoint import PARAM_PREFIX, STATE_PREFIX, save_checkpoint, weights_record
    from ..training.run_contents import refuse_new_run, run_contents
    from .specs import resolve_spec_path

    arch = ARCHITECTURES[arch_name]
    ckpt_dir = os.path.join(out, "checkpoints")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise WeightsError(f"-o {out}: not a directory (the run directory to create)")
    refusal = refuse_new_run(run_contents(out), "import")
    if refusal:
        raise WeightsError(refusal)
    net = compile_spec(resolve_spec_path(arch.spec))
    if spec is not None:
        given = compile_spec(resolve_spec_path(spec))
        if _network_only(given.spec) != _network_only(net.spec):
            raise WeightsError(f"{spec}: not the network of specs/{arch.spec}.yaml (its layers, input or "
                               f"classes differ); --spec may change only the train and data sections, names "
                               f"and placement (e.g. base: {arch.spec}.yaml with another data: resize)")
        net = given
    names = read_class_names(classes, net.classes)
    params, bn_state = map_state_dict(net, arch, read_state_dict(weights), weights)
    state = weights_record(net, names, {**arch.data, **net.settings("data")},   # the spec's keys win
                           imported={"architecture": arch_name, "weights": os.path.abspath(weights),
                                     "sha256": _sha256(weights)})
    tensors = {PARAM_PREFIX + k: v for k, v in params.items()}
    tensors.update({STATE_PREFIX + k: v for k, v in bn_state.items()})
    return save_checkpoint(ckpt_dir, tensors, state, tag="imported")
