"""Builds `alexnetc.schema.json` (run `python -m alexnetc.compiler.schema.build`) from the op registry.

Each layer op's definition (`op_<name>`) is generated from its descriptor's typed attributes
(`compiler/ops/`): no table of ops or attributes lives here. The rest (top-level sections, training and
data settings) is declared below. The JSON file is what ships and what editors read through the
`# yaml-language-server: $schema=` line; tests/compiler/test_schema.py checks that the committed JSON
equals what this builds.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..blocks import ARG_TYPES
from ..ops import OPS, spec_ops
from ..ops.attrs import IDENT, integer
from ..ops.weighted import DEVICE, INIT_SCHEMA, SPEC_DEFAULTS
from ..ops.window import ROUNDING
from ..program import TRAIN_DTYPES


def bounded(maxv: int, minv: int = 1, desc: str | None = None) -> dict:
    d = integer(minv, maxv)
    if desc:
        d["description"] = desc
    return d


def op_definition(name: str) -> dict:
    """The JSON Schema of one op's own layer keys, from its descriptor."""
    op = OPS[name]
    props = {a.name: a.fragment() for a in op.spec_attrs()}
    required = [a.name for a in op.spec_attrs() if a.required or a.spec_required]
    out: dict = {"properties": props}
    if op.inputs[0] >= 2:
        required.append("inputs")
    if required:
        out = {"required": required, **out}
    if op.doc:
        out["description"] = op.doc
    return out


COMMON = {
    "name": {**IDENT, "description": "Unique layer name."},
    "op": {"enum": spec_ops()},
    "input": {**IDENT, "description": "The layer this one reads (default: the previous layer; 'data' is the "
                                      "network input)."},
    "inputs": {"type": "array", "items": IDENT, "minItems": 1, "maxItems": 64,
               "description": "Several inputs (concat, add)."},
    "doc": {"type": "string", "description": "Free text, ignored by the compiler."},
}
LAYER = {"type": "object", "required": ["name", "op"], "properties": dict(COMMON),
         "allOf": [{"if": {"properties": {"op": {"const": op}}, "required": ["op"]},
                    "then": {"$ref": f"#/$defs/op_{op}"}} for op in spec_ops()],
         "unevaluatedProperties": False}
INSTANCE = {"type": "object", "required": ["name", "block"], "additionalProperties": False,
            "description": "A block instance: the block's layers, named NAME.LAYER (see blocks).",
            "properties": {
                "name": {**IDENT, "description": "The instance's name: its layers are NAME.LAYER, and NAME refers to "
                                                 "its output (the last layer)."},
                "block": {**IDENT, "description": "The block (a key of blocks:) to instantiate."},
                "args": {"type": "object", "description": "The block's arguments: {name: value}."},
                "repeat": {"type": "integer", "minimum": 1, "maximum": 1000,
                           "description": "Instantiate n times in a chain: NAME.1 ... NAME.n (default 1)."},
                "input": COMMON["input"],
                DEVICE.name: {**IDENT, "description": "The device of every layer of the instance that takes a device "
                                                   "and names none itself."},
                "doc": COMMON["doc"]}}
ARG_DECL = {"oneOf": [{"enum": list(ARG_TYPES)},
                      {"type": "object", "required": ["type"], "additionalProperties": False,
                       "properties": {"type": {"enum": list(ARG_TYPES)}, "default": {}}}]}
BLOCKS = {"type": "object", "description": "Named templates of layers, instantiated by layers with block: NAME.",
          "additionalProperties": {
              "type": "object", "required": ["layers"], "additionalProperties": False, "properties": {
                  "args": {"type": "object", "additionalProperties": ARG_DECL,
                           "description": "Declared arguments: {name: type} or {name: {type: T, default: V}}; "
                                          "a template value $name is replaced by the argument, whole."},
                  "layers": {"type": "array", "items": {"type": "object"}, "minItems": 1,
                             "description": "The template's layers; 'in' is the instance's input."},
                  "doc": {"type": "string"}}}}
SCHEDULE = {"type": "object", "additionalProperties": False, "required": ["type"], "default": {"type": "constant"},
            "description": "How the learning rate changes (default: constant): between epochs (step, plateau) or "
                           "at every update (cosine), after an optional linear warm-up.", "properties": {
    "type": {"enum": ["constant", "plateau", "step", "cosine"]},
    "factor": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 0.1,
               "description": "Multiply the lr by this (0.1: divide by 10)."},
    "max_drops": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 3,
                  "description": "plateau: at most this many drops (the paper: 3)."},
    "patience": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1,
                 "description": "plateau: epochs without improvement of validation top-1 error before a drop."},
    "every": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 30,
              "description": "step: drop every this many epochs."},
    "warmup_epochs": {"type": "number", "minimum": 0, "maximum": 100000, "default": 0,
                      "description": "Any type: raise the lr linearly from lr/W to lr over the first W updates, W = "
                                     "warmup_epochs x updates per epoch (fractions allowed; 0: no warm-up)."},
    "min_lr": {"type": "number", "minimum": 0, "maximum": 100, "default": 0,
               "description": "cosine: the lr the decay ends at, after the last update of the last epoch."}}}
OPTIMIZER = {"type": "object", "additionalProperties": False, "required": ["type"], "default": {"type": "sgd"},
             "description": "The optimiser: sgd (the paper's, with momentum; default) or adamw (Adam with "
                            "decoupled weight decay). weight_decay and the layers' lr_mult/decay_mult apply to "
                            "both.", "properties": {
    "type": {"enum": ["sgd", "adamw"]},
    "betas": {"type": "array", "minItems": 2, "maxItems": 2, "default": [0.9, 0.999],
              "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
              "description": "adamw: the decay rates of the first and second moment estimates."},
    "eps": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1e-8,
            "description": "adamw: added to the second moment's root in the denominator."}}}
# The training defaults live here and nowhere else (the paper's values where it has one): the runtime
# reads them from the shipped schema (`schema.with_defaults`), docs/spec.md documents them.
TRAIN = {"type": "object", "additionalProperties": False, "properties": {
    "batch_size": {**bounded(1 << 16), "default": 128,
                   "description": "Images per SGD step, over all processes (the paper: 128)."},
    "epochs": {**bounded(100000), "default": 90, "description": "Passes over the training set (the paper: ~90)."},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1, "default": 0,
             "description": "Seeds the initial weights, data order, augmentation and dropout."},
    "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 0.01,
           "description": "Base learning rate (the paper: 0.01)."},
    "optimizer": OPTIMIZER,
    "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.9,
                 "description": "SGD momentum (the paper: 0.9)."},
    "weight_decay": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.0005,
                     "description": "Weight decay (the paper: 0.0005), scaled per parameter by decay_mult: SGD's L2 "
                                    "term, AdamW's decoupled decay (w <- w (1 - lr wd))."},
    "schedule": SCHEDULE,
    "limit_train_batches": {"type": "integer", "minimum": 1,
                            "description": "Use at most this many batches per epoch (quick runs)."},
    "limit_val_batches": {"type": "integer", "minimum": 1,
                          "description": "Evaluate at most this many validation batches."},
    "sync_batchnorm": {"type": "boolean", "default": False,
                       "description": "Under data parallelism, batch norm normalises with the global batch's "
                                      "statistics (a collective in each batch norm's forward and backward); "
                                      "default false: each process its own shard's, as DDP without SyncBatchNorm."},
    "dtype": {"enum": list(TRAIN_DTYPES), "default": TRAIN_DTYPES[0],
              "description": "float32 (default); float64 (CPU reference backend only: exact checks); "
                             "bfloat16 mixed precision (bf16 compute, fp32 master weights, SGD state and "
                             "loss)."}}}
DATA = {"type": "object", "additionalProperties": False, "properties": {
    "resize": bounded(1 << 14, desc="Resize the shorter side to this before cropping (the paper: 256)."),
    "crop": bounded(1 << 14, desc="Random crop size while training, centre crop when evaluating "
                                  "(the paper: 224)."),
    "mirror": {"type": "boolean", "description": "Random horizontal flips while training."},
    "pca_lighting": {"type": "number", "minimum": 0, "maximum": 10,
                     "description": "Sigma of the paper's PCA colour noise (0.1); 0 turns it off."},
    "test_crops": {"enum": ["center", "ten"], "description":
                   "center, or the paper's ten patches (corners + centre, and mirrors), softmax averaged."},
    "mean": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 4},
    "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1, "maxItems": 4}}}
TOP = {
    "base": {"type": "string", "minLength": 1,
             "description": "Path of a spec this one builds on (relative to this file)."},
    "name": IDENT,
    "description": {"type": "string"},
    "input": {"type": "object", "additionalProperties": False, "required": ["channels", "height", "width"],
              "properties": {"channels": bounded(65536), "height": bounded(1 << 16), "width": bounded(1 << 16)}},
    "classes": bounded(1 << 20),
    "devices": {"type": "array", "items": IDENT, "minItems": 1, "maxItems": 64, "uniqueItems": True,
                "description": "Logical devices (gpu0, gpu1, ...), mapped onto real ones when the graph "
                               "is bound."},
    ROUNDING.name: ROUNDING.fragment(),
    "defaults": {"type": "object", "additionalProperties": False,
                 "description": "Defaults for every conv and fc layer that does not set the key itself.",
                 "properties": {a.name: a.fragment() for a in SPEC_DEFAULTS}},
    "blocks": BLOCKS,
    "layers": {"type": "array", "items": {"$ref": "#/$defs/layer"}, "minItems": 1},
    "modify_layers": {"type": "object", "additionalProperties": {"type": "object"},
                      "description": "Variant edit: {layer name: {key: new value, or null to delete the key}}."},
    "remove_layers": {"type": "array", "items": IDENT, "description": "Variant edit: names of base layers to drop."},
    "insert_layers": {"type": "array", "description": "Variant edit: [{after: NAME or before: NAME, layers: [...]}].",
                      "items": {"type": "object", "additionalProperties": False, "required": ["layers"],
                                "properties": {"after": IDENT, "before": IDENT,
                                               "layers": {"type": "array", "items": {"type": "object"},
                                                          "minItems": 1}},
                                "oneOf": [{"required": ["after"]}, {"required": ["before"]}]}},
    "train": TRAIN, "data": DATA,
}


def build() -> dict:
    defs = {f"op_{op}": op_definition(op) for op in spec_ops()}
    defs["layer"] = {"if": {"type": "object", "required": ["block"]}, "then": {"$ref": "#/$defs/instance"},
                     "else": {"$ref": "#/$defs/plain_layer"}}
    defs["plain_layer"] = LAYER
    defs["instance"] = INSTANCE
    defs["init"] = INIT_SCHEMA
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://alexnetc.dev/schema/alexnetc.schema.json",
        "title": "alexnetc network spec",
        "description": "A convolutional network for alexnetc: input, devices, layers (a graph through named "
                       "inputs), training and data settings. See docs/spec.md.",
        "type": "object",
        "properties": TOP,
        "additionalProperties": False,
        "if": {"required": ["base"]},
        "then": {},
        "else": {"required": ["input", "classes", "layers"]},
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(build(), indent=1) + "\n"


if __name__ == "__main__":
    Path(__file__).with_name("alexnetc.schema.json").write_text(render(), encoding="utf-8")
