"""Overlays say which half is the ground truth and which the prediction,
with a class colour legend."""
import cv2
import numpy as np

from mmseg.datasets import CityscapesDataset
from repseg.visualization import annotate_overlay, new_pngs


def test_annotated_overlay_has_titles_and_legend(tmp_path):
    meta = CityscapesDataset.METAINFO
    path = str(tmp_path / 'ov.png')
    img = np.full((64, 256, 3), 127, np.uint8)   # no palette colour in it
    cv2.imwrite(path, img)
    assert new_pngs(str(tmp_path), 0) == [path]
    annotate_overlay(path, meta['classes'], meta['palette'])
    out = cv2.imread(path)[..., ::-1]
    assert out.shape[0] > 64 and out.shape[1] >= 256   # titles + legend
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    # every class colour appears (the legend's patches)
    missing = [n for n, c in zip(meta['classes'], meta['palette'])
               if tuple(c) not in colours]
    assert not missing
    # dark title text above the image
    assert (out[:out.shape[0] // 6] < 60).all(axis=-1).any()
