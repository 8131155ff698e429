"""Source of truth for the spec schema: builds `alexnetc.schema.json` (run `python -m alexnetc.compiler.schema.build`).

The JSON file is what ships and what editors read through the `# yaml-language-server: $schema=` line;
this module keeps the repetitive parts (per-op layer definitions, bounded integers) in one place.
tests/compiler/test_schema.py checks that the committed JSON equals what this builds.
"""
from __future__ import annotations

import json
from pathlib import Path

OPS = ("conv", "fc", "lrn", "maxpool", "avgpool", "dropout", "flatten", "relu", "tanh", "sigmoid",
       "concat", "softmax_loss")


def bounded(maxv, minv=1, desc=None):
    d = {"type": "integer", "minimum": minv, "maximum": maxv}
    if desc:
        d["description"] = desc
    return d


def pair(maxv, minv, desc):
    return {"description": desc, "oneOf": [bounded(maxv, minv), {
        "type": "array", "items": bounded(maxv, minv), "minItems": 2, "maxItems": 2}]}


INIT = {
    "description": "Initialiser: {type: gaussian, std: S[, mean: M]}, {type: constant, value: V}, "
                   "{type: kaiming} (N(0, 2/fan_in)), {type: uniform, scale: A}; a bare number means a constant.",
    "anyOf": [
        {"type": "number"},
        {"type": "object", "required": ["type"], "additionalProperties": False,
         "properties": {
             "type": {"enum": ["gaussian", "constant", "kaiming", "uniform"]},
             "std": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
             "mean": {"type": "number"},
             "value": {"type": "number"},
             "scale": {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
                       "description": "uniform: U(-scale, scale)"}},
         "allOf": [
             {"if": {"properties": {"type": {"const": "gaussian"}}}, "then": {"required": ["std"]}},
             {"if": {"properties": {"type": {"const": "constant"}}}, "then": {"required": ["value"]}},
             {"if": {"properties": {"type": {"const": "uniform"}}}, "then": {"required": ["scale"]}}]}]}
MULT = {"description": "Multiplier for the learning rate or weight decay: one number for weights and bias, "
                       "or {weight: W, bias: B}.",
        "anyOf": [{"type": "number", "minimum": 0, "maximum": 1000},
                  {"type": "object", "additionalProperties": False,
                   "properties": {"weight": {"type": "number", "minimum": 0, "maximum": 1000},
                                  "bias": {"type": "number", "minimum": 0, "maximum": 1000}}}]}
IDENT = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_.-]*$", "maxLength": 64}
ACT = {"enum": ["none", "relu", "tanh", "sigmoid"],
       "description": "Activation fused onto the layer's output (default: defaults.act, else none)."}
ROUNDING = {"enum": ["floor", "ceil", "exact"],
            "description": "Output-size rounding: floor (MXNet, Caffe conv), ceil (Caffe pooling, "
                           "cuda-convnet), exact (the division must be exact)."}
GROUPS = {
    "type": "object", "additionalProperties": False, "required": ["count"],
    "description": "Split the layer into `count` groups (towers). Group i runs on devices[i]; `connect: own` "
                   "reads only the i-th slice of the input's channels (the paper's conv2/conv4/conv5), "
                   "`connect: all` reads every input channel (conv3, fc6, fc7, fc8).",
    "properties": {
        "count": bounded(64),
        "devices": {"type": "array", "items": IDENT, "minItems": 1, "maxItems": 64},
        "connect": {"enum": ["own", "all"], "default": "own"}}}
COMMON = {
    "name": {**IDENT, "description": "Unique layer name."},
    "op": {"enum": list(OPS)},
    "input": {**IDENT, "description": "The layer this one reads (default: the previous layer; 'data' is the "
                                      "network input)."},
    "inputs": {"type": "array", "items": IDENT, "minItems": 1, "maxItems": 64,
               "description": "Several inputs (concat)."},
    "doc": {"type": "string", "description": "Free text, ignored by the compiler."},
}
PARAM_KEYS = {"act": ACT, "groups": GROUPS, "device": IDENT, "weight_init": INIT, "bias_init": INIT,
              "lr_mult": MULT, "decay_mult": MULT,
              "bias": {"type": "boolean", "description": "Learn a bias (default true)."}}
OP_PROPS = {
    "conv": {"required": ["filters", "kernel"], "properties": {
        "filters": bounded(65536, desc="Output channels (all groups together)."),
        "kernel": pair(4096, 1, "Kernel size: n or [h, w]."),
        "stride": pair(4096, 1, "Stride (default 1)."),
        "pad": pair(4096, 0, "Zero padding on each side (default 0)."),
        "rounding": ROUNDING, **PARAM_KEYS}},
    "fc": {"required": ["units"], "properties": {
        "units": bounded(1 << 20, desc="Output features (all groups together)."),
        "in_features": bounded(1 << 30, desc="Optional: the input size you expect; checked against the "
                                             "inferred one."),
        **PARAM_KEYS}},
    "lrn": {"required": ["size", "alpha", "beta", "k", "alpha_over_n"], "properties": {
        "size": bounded(1023, desc="Window n (odd): channels c-n//2 .. c+n//2."),
        "k": {"type": "number", "minimum": 0, "maximum": 1e6},
        "alpha": {"type": "number", "minimum": 0, "maximum": 1e6},
        "beta": {"type": "number", "minimum": 0, "maximum": 100},
        "alpha_over_n": {"type": "boolean", "description":
                         "true: the sum is scaled by alpha/n (cuda-convnet, Caffe, PyTorch, MXNet, cuDNN, ONNX); "
                         "false: by alpha as written (the paper's formula, TensorFlow)."}}},
    "maxpool": {"required": ["kernel"], "properties": {
        "kernel": pair(4096, 1, "Window size z."), "stride": pair(4096, 1, "Stride s (default: kernel)."),
        "pad": pair(4096, 0, "Padding (default 0)."), "rounding": ROUNDING}},
    "avgpool": {"required": ["kernel"], "properties": {
        "kernel": pair(4096, 1, "Window size."), "stride": pair(4096, 1, "Stride (default: kernel)."),
        "pad": pair(4096, 0, "Padding (default 0)."), "rounding": ROUNDING}},
    "dropout": {"required": ["p"], "properties": {"p": {
        "type": "number", "minimum": 0, "exclusiveMaximum": 1,
        "description": "Probability of dropping a unit while training."}}},
    "flatten": {"properties": {}}, "relu": {"properties": {}}, "tanh": {"properties": {}},
    "sigmoid": {"properties": {}},
    "concat": {"required": ["inputs"], "properties": {}},
    "softmax_loss": {"properties": {}},
}
LAYER = {"type": "object", "required": ["name", "op"], "properties": dict(COMMON),
         "allOf": [{"if": {"properties": {"op": {"const": op}}, "required": ["op"]},
                    "then": {"$ref": f"#/$defs/op_{op}"}} for op in OP_PROPS],
         "unevaluatedProperties": False}
TRAIN = {"type": "object", "additionalProperties": False, "properties": {
    "batch_size": bounded(1 << 16), "epochs": bounded(100000),
    "seed": {"type": "integer", "minimum": 0, "maximum": 2 ** 63 - 1},
    "lr": {"type": "number", "exclusiveMinimum": 0, "maximum": 100,
           "description": "Base learning rate (the paper: 0.01)."},
    "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    "weight_decay": {"type": "number", "minimum": 0, "maximum": 1},
    "schedule": {"type": "object", "additionalProperties": False, "required": ["type"], "properties": {
        "type": {"enum": ["constant", "plateau", "step"]},
        "factor": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1,
                   "description": "Multiply the lr by this (0.1: divide by 10)."},
        "max_drops": {"type": "integer", "minimum": 0, "maximum": 1000,
                      "description": "plateau: at most this many drops (the paper: 3)."},
        "patience": {"type": "integer", "minimum": 1, "maximum": 1000,
                     "description": "plateau: epochs without improvement of validation top-1 error "
                                    "before a drop."},
        "every": {"type": "integer", "minimum": 1, "maximum": 100000,
                  "description": "step: drop every this many epochs."}}},
    "limit_train_batches": {"type": "integer", "minimum": 1,
                            "description": "Use at most this many batches per epoch (quick runs)."},
    "limit_val_batches": {"type": "integer", "minimum": 1}}}
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
    "rounding": ROUNDING,
    "defaults": {"type": "object", "additionalProperties": False, "properties": {
        "act": ACT, "weight_init": INIT, "bias_init": INIT, "lr_mult": MULT, "decay_mult": MULT}},
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
    defs = {f"op_{op}": dict(v) for op, v in OP_PROPS.items()}
    defs["layer"] = LAYER
    defs["init"] = INIT
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
