"""Data: image datasets (`datasets`), random images for timing (`synthetic`), the paper's augmentation
and statistics (`augment`), and the batch loader (`loader`).
"""
