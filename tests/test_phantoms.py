import numpy as np
from PIL import Image

from pocus_edge.data.phantoms import make_phantom, write_phantom_dataset


def test_same_seed_same_pixels_and_different_seed_differs():
    a, b, c = make_phantom(7), make_phantom(7), make_phantom(8)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


def test_sector_and_linear_geometry_have_different_fields_of_view():
    sector = make_phantom(3, size=(128, 128), geometry="sector")
    linear = make_phantom(3, size=(128, 128), geometry="linear")
    assert sector.image.dtype == np.uint8 and sector.image.shape == (128, 128)
    assert not np.array_equal(sector.field_of_view, linear.field_of_view)
    # outside the field of view the image is black, inside there is speckle
    assert sector.image[~sector.field_of_view].max() == 0
    assert sector.image[sector.field_of_view].std() > 10


def test_lesions_lie_inside_the_field_of_view_and_change_echogenicity():
    found = 0
    for seed in range(20):
        p = make_phantom(seed, size=(128, 128))
        if p.label == "normal":
            assert p.mask.sum() == 0
            continue
        found += 1
        assert p.mask.sum() > 20
        assert not (p.mask.astype(bool) & ~p.field_of_view).any()
        inside = p.image[p.mask == 1].mean()
        ring = p.image[(p.mask == 0) & p.field_of_view].mean()
        assert (inside < ring) if p.label == "hypoechoic" else (inside > ring)
    assert found >= 10


def test_dataset_layout_matches_shared_data(tmp_path):
    out = write_phantom_dataset(tmp_path / "ph", 4, size=(64, 80), seed=0)
    header = (out / "manifest.csv").read_text().splitlines()[0].split(",")
    assert {"file", "mask", "label", "case_id"} <= set(header)
    img = np.asarray(Image.open(out / "images" / "phantom_0001.png"))
    mask = np.asarray(Image.open(out / "masks" / "phantom_0001.png"))
    assert img.shape == mask.shape == (64, 80)
    assert set(np.unique(mask)) <= {0, 255}
