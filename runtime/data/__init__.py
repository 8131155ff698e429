"""Data: image datasets (`datasets`), the paper's augmentation and statistics (`augment`), and the
batch loader (`loader`).
"""
