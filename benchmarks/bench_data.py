"""Loader throughput without the network: images/s per core from an ImageNet-like folder, four ways.

    python benchmarks/bench_data.py                      # 2,000 generated 500x375 JPEGs, 3 rounds
    python benchmarks/bench_data.py --images 400 --rounds 2 --out /tmp/results        # a quick look
    python benchmarks/bench_data.py --device cuda        # on a GPU machine: the packs augment there

Contenders, each producing training batches (float32, 224x224, random crop and mirror, normalised)
in the main process on one thread (num_workers 0, torch.set_num_threads(1)), so that CPU time is one
core's:

- ``imagefolder``: today's ImageFolder path: Pillow decode, resize to 256 (data.resize), numpy crop,
  mirror and PCA colour noise, normalise, one sample at a time (``make_loader`` with
  ``TrainTransform``, AlexNet's data section);
- ``pillow``: a plain torchvision-style Pillow pipeline written here as the anchor: open, RGB,
  Resize(256), RandomCrop(224), RandomHorizontalFlip, ToTensor, Normalize (no colour noise);
- ``pack-raw`` / ``pack-jpeg``: ``alexnetc pack``'s output (256x256 raw uint8 / JPEG quality 90)
  through the batched pack loader, same augmentation as ``imagefolder`` (PCA noise included), on the
  CPU. Each pack is opened once, as a training process does: the first round is a first epoch (every
  chunk's checksum verified as it is first read), later rounds are later epochs; both are reported.
- ``pack-raw-gpu-host``: what the CPU still does per image when the GPU augments (``--device cuda``'s
  host side): the draws and the whole 256x256 images read from the raw pack into a batch buffer.
  Not a training-ready batch on this machine (no GPU): a row for the record, not for the goals.

The folder is generated once (cached; ``--data`` to choose where): ``--images`` JPEGs (quality 90) of
500x375 or 375x500 pixels whose content has natural images' statistics (a 1/f amplitude spectrum
with correlated colour, hard-edged shapes, grain): they compress like photographs (about 115 kB
each, near ImageNet's average), not like flat colour. The contenders run in turns, ``--rounds``
rounds of one whole epoch each (``--per-round`` to take fewer images); a row's figure is the median
round. Per core = images / CPU seconds of the process; wall-clock images/s too. The load average
before and after is recorded: on a shared machine the wall-clock numbers move with it, the CPU-time
ones much less. Results go to benchmarks/results/ (``--out``), with the markdown table printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # results_io, beside this file
from results_io import RESULTS, device_name, environment, machine_load, write_result  # noqa: E402

AUGMENT = {"resize": 256, "crop": 224, "mirror": True, "pca_lighting": 0.1}   # specs/alexnet.yaml's data section
GOALS = {"pack-raw": 10.0, "pack-jpeg": 2.0}                                   # x imagefolder, per core
CLASSES = 10


# --------------------------------------------------------------------------- the folder

def photo_like(rng, h: int, w: int):
    """An (h, w, 3) uint8 image with natural images' statistics: 1/f amplitude spectrum (luminance, and
    smoother colour), a few hard-edged textured shapes (occlusion edges), sensor-like grain."""
    import numpy as np

    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy ** 2 + fx ** 2)
    f[0, 0] = 1.0

    def field(beta: float):
        spec = (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape)) / f ** beta
        spec[0, 0] = 0
        x = np.fft.irfft2(spec, s=(h, w))
        return x / x.std()

    lum, c1, c2, tex = field(1.0), field(1.4), field(1.4), field(1.1)
    rgb = (118 + 50 * lum[..., None] + 22 * c1[..., None] * np.array([1, -0.4, -0.6])
           + 14 * c2[..., None] * np.array([-0.3, 1, -0.7]))
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(3, 9))):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(20, h / 2), rng.uniform(20, w / 2)
        if rng.random() < 0.6:
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        else:
            mask = (abs(yy - cy) < ry) & (abs(xx - cx) < rx)
        rgb[mask] += rng.normal(0, 40, 3) + 25 * np.roll(tex, (int(cy), int(cx)), (0, 1))[mask][:, None]
    rgb += rng.normal(0, 3, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _write_one(args: tuple) -> int:
    import numpy as np
    from PIL import Image

    path, seed, portrait = args
    rng = np.random.default_rng(seed)
    h, w = (500, 375) if portrait else (375, 500)
    Image.fromarray(photo_like(rng, h, w)).save(path, "JPEG", quality=90)
    return os.path.getsize(path)


def make_folder(root: str, n: int, workers: int) -> dict:
    """ROOT/train/classNN/imgNNNNN.jpg, ``n`` images in ``CLASSES`` classes (one in five portrait);
    reused when complete. Returns its size statistics."""
    from concurrent.futures import ProcessPoolExecutor

    todo = []
    for i in range(n):
        d = os.path.join(root, "train", f"class{i % CLASSES:02d}")
        os.makedirs(d, exist_ok=True)
        p = os.path.join(d, f"img{i:05d}.jpg")
        if not os.path.exists(p):
            todo.append((p, i, i % 5 == 4))
    if todo:
        print(f"generating {len(todo)} photo-like JPEGs in {root} (once) ...", flush=True)
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_one, todo, chunksize=8))
    sizes = [os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(os.path.join(root, "train")) for f in fs]
    return {"images": len(sizes), "bytes": sum(sizes), "mean_kb": round(sum(sizes) / len(sizes) / 1e3, 1)}


# --------------------------------------------------------------------------- contenders

def pillow_pipeline(samples, batch: int, seed: int):
    """The anchor: what torchvision's ImageNet example does per image, with Pillow and torch only."""
    import numpy as np
    import torch
    from PIL import Image

    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(samples))
    for b in range(0, len(order) - batch + 1, batch):
        xs, ys = [], []
        for i in order[b:b + batch]:
            path, label = samples[i]
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size                                        # Resize(256): shorter side to 256
                size = (256, round(h * 256 / w)) if w < h else (round(w * 256 / h), 256)
                im = im.resize(size, Image.BILINEAR)
                t, l = int(rng.integers(0, im.size[1] - 224 + 1)), int(rng.integers(0, im.size[0] - 224 + 1))
                im = im.crop((l, t, l + 224, t + 224))                # RandomCrop(224)
                if rng.random() < 0.5:                                # RandomHorizontalFlip
                    im = im.transpose(Image.FLIP_LEFT_RIGHT)
                x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
            xs.append((x - mean) / std)                               # ToTensor, Normalize
            ys.append(label)
        yield torch.stack(xs), torch.tensor(ys)


def gpu_host_side(loader):
    """The CPU's share of the GPU path, for each batch of ``loader`` (a PackLoader): the draws and the
    whole images read into one reused batch buffer (the GPU would then crop, mirror, add the noise and
    normalise, see runtime/data/device_augment.py)."""
    import numpy as np

    pack, aug = loader.pack, loader.augment
    buf = np.empty((loader.batch_size, pack.height, pack.width, pack.stored_channels), dtype=np.uint8)
    for idx in loader.batches:
        draws = aug.draws(loader.seed, loader.epoch, idx)
        pack.read(idx, out=buf[:len(idx)])
        yield buf[:len(idx)], draws


def _timed(batches, device) -> tuple[int, float, float]:
    """(images, wall s, CPU s) to exhaust ``batches``."""
    import torch

    n = 0
    c0, t0 = time.process_time(), time.perf_counter()
    for x, _ in batches:
        n += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n, time.perf_counter() - t0, time.process_time() - c0


def run(argv=None) -> dict:
    """The benchmark, on one torch thread; the caller's thread count is restored after (the tests run
    it inside pytest, whose later tests compare bit patterns that depend on it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(argv)
    finally:
        torch.set_num_threads(threads)


def _run(argv=None) -> dict:
    import numpy as np
    import torch

    from alexnetc.runtime.data.augment import build_transforms, dataset_stats
    from alexnetc.runtime.data.datasets import ImageFolder
    from alexnetc.runtime.data.loader import make_loader
    from alexnetc.runtime.data.pack import PackDataset
    from alexnetc.runtime.data.packer import list_sources, pack_split

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000, help="images in the generated folder (default 2000)")
    ap.add_argument("--data", help="where the folder and packs live (default: $ALEXNETC_CACHE or ~/.cache/alexnetc)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-round", type=int, help="images per contender per round (default: all: one epoch)")
    ap.add_argument("--device", default="cpu", help="where the packs' batches are augmented (cpu or cuda)")
    ap.add_argument("--only", nargs="*", help="contenders to run (default all)")
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    from alexnetc.runtime.data.augment import default_cache_dir

    base = args.data or os.path.join(default_cache_dir(), "bench-data")
    root = os.path.join(base, f"imagenet-like-{args.images}")
    load_before = machine_load()
    folder = make_folder(root, args.images, max(1, os.cpu_count() or 1))
    packs, packing = {}, {}
    src = list_sources(root, 3)[0]
    for fmt in ("raw", "jpeg"):
        out = os.path.join(base, f"imagenet-like-{args.images}-pack-{fmt}")
        c0 = time.process_time()
        s = pack_split(src, out, size=256, fmt=fmt, quality=90, workers=1, progress=False, log=lambda m: None)
        if not s.skipped:   # one worker, in this process: CPU time is one core's
            packing[fmt] = {"images_per_cpu_second": round(len(src) / max(time.process_time() - c0, 1e-9), 1),
                            "seconds": round(s.seconds, 2)}
        packs[fmt] = {"path": s.path, "bytes": s.file_bytes, "kb_per_image": round(s.file_bytes / s.count / 1e3, 1)}

    ds = ImageFolder(os.path.join(root, "train"))
    stats = dataset_stats(ds, cache_dir=os.path.join(base, "cache"))
    train_tf, _ = build_transforms(AUGMENT, ds, stats=stats)
    per_round = min(args.per_round or len(ds), len(ds))
    per_round -= per_round % args.batch
    limit = per_round // args.batch

    opened = {fmt: PackDataset(packs[fmt]["path"]) for fmt in ("raw", "jpeg")}   # once, as a training process

    def contender(name: str, r: int):
        if name == "imagefolder":
            return make_loader(ds, train_tf, args.batch, shuffle=True, seed=r, epoch=0, drop_last=True,
                               limit_batches=limit)
        if name == "pillow":
            sub = [ds.samples[i] for i in np.random.default_rng(r).permutation(len(ds))[:per_round]]
            return pillow_pipeline(sub, args.batch, r)
        pack = opened[name.split("-")[1]]
        loader = make_loader(pack, train_tf, args.batch, shuffle=True, seed=r, epoch=0, drop_last=True,
                             limit_batches=limit, device=device, pin_memory=device.type == "cuda")
        return gpu_host_side(loader) if name.endswith("gpu-host") else loader

    names = [n for n in ("imagefolder", "pillow", "pack-raw", "pack-jpeg", "pack-raw-gpu-host")
             if not args.only or n in args.only]
    rounds = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names:   # in turns: every contender sees the machine's load of this round
            n, wall, cpu = _timed(contender(name, r), device)
            rounds[name].append({"images": n, "wall_s": round(wall, 6), "cpu_s": round(cpu, 6)})
            print(f"round {r + 1}: {name:12s} {n} images  {n / wall:8.1f} img/s wall  {n / max(cpu, 1e-9):8.1f} "
                  f"img/s per core", flush=True)
    rows = []
    for name in names:
        per_core = statistics.median(x["images"] / max(x["cpu_s"], 1e-9) for x in rounds[name])
        wall = statistics.median(x["images"] / max(x["wall_s"], 1e-9) for x in rounds[name])
        first = rounds[name][0]
        rows.append({"contender": name, "images_per_core_second": round(per_core, 1),
                     "images_per_wall_second": round(wall, 1),
                     "first_round_images_per_core_second": round(first["images"] / max(first["cpu_s"], 1e-9), 1),
                     "rounds": rounds[name]})
    base_row = next((r for r in rows if r["contender"] == "imagefolder"), None)
    for row in rows:
        if base_row:
            row["x_imagefolder_per_core"] = round(row["images_per_core_second"] / base_row["images_per_core_second"], 2)
            if row["contender"] in GOALS:
                row["goal_x"] = GOALS[row["contender"]]
                row["goal_met"] = row["x_imagefolder_per_core"] >= GOALS[row["contender"]]
                first_x = row["first_round_images_per_core_second"] / base_row["images_per_core_second"]
                row["x_imagefolder_per_core_first_round"] = round(first_x, 2)
    result = {"benchmark": "data", "device": device_name(device), "env": environment(),
              "load_before": load_before, "load_after": machine_load(),
              "settings": {"images": args.images, "batch": args.batch, "rounds": args.rounds, "per_round": per_round,
                           "augment": AUGMENT, "torch_threads": 1, "workers": 0, "augment_device": str(device)},
              "folder": folder, "packs": packs, "packing": packing, "rows": rows}
    print()
    print(markdown(result))
    write_result(result, args.out, f"data-{'cuda' if device.type == 'cuda' else 'cpu'}")
    return result


def markdown(result: dict) -> str:
    """The table for docs/performance.md."""
    lines = ["| contender | images/s per core (CPU time) | images/s wall clock | x ImageFolder per core | "
             "first round (checksums) | goal |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        goal = f"≥ {r['goal_x']:g}x: {'met' if r['goal_met'] else 'missed'}" if "goal_x" in r else ""
        first = (f"{r['first_round_images_per_core_second']:,.0f} ({r['x_imagefolder_per_core_first_round']:.1f}x)"
                 if "x_imagefolder_per_core_first_round" in r else "")
        ratio = f"{r['x_imagefolder_per_core']:.1f}" if "x_imagefolder_per_core" in r else ""
        lines.append(f"| {r['contender']} | {r['images_per_core_second']:,.0f} | {r['images_per_wall_second']:,.0f} | "
                     f"{ratio} | {first} | {goal} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run()
