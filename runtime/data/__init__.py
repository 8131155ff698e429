"""Data: image datasets (`datasets`), random images for timing (`synthetic`), the paper's augmentation
and statistics (`augment`), and the batch loader (`loader`, its batches from `order`). Packs: the file
format and reader (`pack`), the packer behind `alexnetc pack` (`packer`), their batched loader
(`pack_loader`) with keyed draws (`draws`) and batch augmentation on the training device
(`device_augment`); the share of an epoch spent waiting for data (`data_wait`).
"""
