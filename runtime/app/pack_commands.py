"""`alexnetc pack DATA -o OUT`: a dataset preprocessed once into one file per split (``data/packer.py``),
which `train`, `eval`, `neighbors` and `compare` then read with ``--data OUT``. Heavy imports happen
inside the command."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .errors import EnvironmentFailure, UserError, say

EPILOG = """examples:
  alexnetc pack /data/imagenet -o /data/imagenet-pack         # raw uint8 at 256x256, the paper's preprocessing
  alexnetc pack /data/imagenet -o /data/imagenet-jpeg --format jpeg --quality 90
  alexnetc pack /usr/share/datasets/fashion-mnist -o fmnist-pack   # IDX files, at their own 28x28
  alexnetc train specs/alexnet.yaml --data /data/imagenet-pack

Each image: shorter side resized to --size (Pillow bilinear with antialiasing, as data.resize does), then
the central --size x --size patch, as the paper did once before training; the random crops, mirrors and
colour noise stay for training time, drawn a batch at a time on the training device. DATA is an
ImageNet-style tree (DATA/train/<class>/*, DATA/val/<class>/*) or MNIST-style IDX files; OUT gets
train.pack and val.pack.

Sizes: raw holds size*size*channels bytes per image, 196,608 at 256x256x3: ImageNet-1k's 1,281,167
training images take 252 GB (235 GiB), its 50,000 validation images 9.8 GB. A JPEG pack (quality 90)
is 5-10x smaller, depending on content (ImageNet at 256 px is reported at about 22 GB; grainy
images take more; the pack prints what it wrote), and costs a JPEG decode per image when read.

Packing uses every core (--workers), shows its progress with an ETA, and can be stopped at any time:
running the same command again continues where it stopped (an unfinished split is OUT/<split>.pack.partial
plus its .journal, never a .pack). Unreadable images are listed by name and left out."""


def _size_from_spec(spec: str) -> tuple[int, int]:
    """(size, channels) a spec's data section and input ask for: data.resize, else the input's side."""
    from ...compiler import compile_spec
    from .specs import resolve_spec_path

    net = compile_spec(resolve_spec_path(spec))
    c, h, w = net.input_shape
    data = net.settings("data")
    if data.get("resize"):
        return int(data["resize"]), c
    if data.get("crop") is None and h == w:
        return h, c
    raise UserError(f"--spec {spec}: its data section names no resize and its input is "
                    f"{'cropped' if h == w else 'not square'}; give --size")


def _pack(args: Any) -> int:
    from ..data.datasets import DatasetError, detect_layout
    from ..data.packer import DEFAULT_SIZE, PackSpaceError, format_unreadable, list_sources, pack_split

    size, channels = (None, None) if not args.spec else _size_from_spec(args.spec)
    size, channels = args.size or size, args.channels or channels
    if size is not None and not 1 <= size <= 65536:
        raise UserError(f"--size {size}: expected 1..65536")
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality {args.quality}: expected 1..100")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserError(f"-o {args.output}: not a directory")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = args.workers or cores
    try:
        idx = detect_layout(args.data) == "idx"
        channels = channels or (1 if idx else 3)
        sources = list_sources(args.data, channels)
        if size is None:
            size = min(sources[0].images.shape[1:3]) if idx else DEFAULT_SIZE
        say(f"packing {args.data} into {args.output}: {', '.join(f'{s.split} ({len(s):,} images)' for s in sources)}; "
              f"{size}x{size}x{channels} {args.format}{f' quality {args.quality}' if args.format == 'jpeg' else ''}; "
              f"{workers} worker{'s' if workers != 1 else ''}")
        for src in sources:
            s = pack_split(src, args.output, size=size, fmt=args.format, quality=args.quality,
                           workers=workers, overwrite=args.overwrite, progress=not args.no_progress, log=say)
            if s.skipped:
                say(f"{src.split}: already packed with these options ({s.count:,} images in {s.path}); nothing to do")
            else:
                rate = (s.count + len(s.unreadable) - s.resumed_from) / max(s.seconds, 1e-9)
                say(f"{src.split}: {s.count:,} images into {s.path} ({s.file_bytes / 1e9:.2f} GB, "
                      f"{s.file_bytes / s.count / 1e3:.1f} kB per image) in {s.seconds:.1f} s ({rate:,.0f} images/s)")
            note = format_unreadable(src.split, s.unreadable)
            if note:
                say(f"warning: {note}", file=sys.stderr)
    except DatasetError as exc:
        raise UserError(str(exc)) from None
    except PackSpaceError as exc:
        raise EnvironmentFailure(str(exc)) from None
    except KeyboardInterrupt:
        print("\nalexnetc pack: interrupted; run the same command again to continue where it stopped")
        return 130
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("pack", help="preprocess a dataset once (the paper's 256x256) into one file per split",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    p.add_argument("data", metavar="DATA", help="an ImageNet-style tree (train/<class>/*, val/<class>/*) or IDX files")
    p.add_argument("-o", "--output", metavar="OUT", required=True, help="folder for train.pack and val.pack")
    p.add_argument("--size", type=int, help="side of the stored square images (default: --spec's data.resize, else "
                                            "256 for image folders, the images' own side for IDX files)")
    p.add_argument("--spec", help="take --size and --channels from this spec's data section and input")
    p.add_argument("--format", choices=("raw", "jpeg"), default="raw",
                   help="raw uint8 (default; fastest to read) or JPEG (several times smaller)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--channels", type=int, choices=(1, 3),
                   help="3 (RGB) or 1 (grey) (default: 1 for IDX files, 3 for image folders)")
    p.add_argument("--workers", type=int, help="processes decoding images (default: every core)")
    p.add_argument("--overwrite", action="store_true", help="replace packs already in OUT made otherwise")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_pack)
