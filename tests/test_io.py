"""core.io: explicit bit depth, container formats and the documented rules for everything else."""
import numpy as np
import pytest
import tifffile
from PIL import Image

from core.io import BioImage, ImageReadError, as_bioimage, read_image, read_image_bytes, write_image

RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 256, (37, 53), dtype=np.uint8)
RGB8 = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (37, 53), dtype=np.uint16)
RGB16 = RNG.integers(0, 65536, (37, 53, 3), dtype=np.uint16)


@pytest.mark.parametrize("pixels", [GRAY8, RGB8, GRAY16, RGB16], ids=["gray8", "rgb8", "gray16", "rgb16"])
def test_png_and_tiff_round_trip_keep_dtype_and_depth(tmp_path, pixels):
    for suffix in (".png", ".tif"):
        path = tmp_path / f"x{suffix}"
        write_image(path, as_bioimage(pixels))
        image = read_image(path)
        assert image.pixels.dtype == pixels.dtype
        assert image.bit_depth == (8 if pixels.dtype == np.uint8 else 16)
        np.testing.assert_array_equal(image.pixels, pixels)


def test_lzw_tiff_is_read(tmp_path):
    path = tmp_path / "lzw.tif"
    tifffile.imwrite(path, RGB8, photometric="rgb", compression="lzw")
    np.testing.assert_array_equal(read_image(path).pixels, RGB8)


def test_pgm_ppm_and_jpeg(tmp_path):
    Image.fromarray(GRAY8).save(tmp_path / "g.pgm")
    Image.fromarray(RGB8).save(tmp_path / "c.ppm")
    Image.fromarray(RGB8).save(tmp_path / "c.jpg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "g.pgm").pixels, GRAY8)
    np.testing.assert_array_equal(read_image(tmp_path / "c.ppm").pixels, RGB8)
    jpg = read_image(tmp_path / "c.jpg")
    assert jpg.pixels.shape == RGB8.shape and jpg.bit_depth == 8


def test_16bit_pgm(tmp_path):
    # binary P5 with maxval 65535, big-endian samples
    path = tmp_path / "g16.pgm"
    path.write_bytes(b"P5\n53 37\n65535\n" + GRAY16.astype(">u2").tobytes())
    image = read_image(path)
    assert image.pixels.dtype == np.uint16 and image.bit_depth == 16
    np.testing.assert_array_equal(image.pixels, GRAY16)


def test_mrc_single_section_and_stack(tmp_path):
    import mrcfile

    single = (GRAY16[None] // 2).astype(np.int16)  # MRC mode 1, non-negative
    with mrcfile.new(tmp_path / "s.mrc") as mrc:
        mrc.set_data(single)
    image = read_image(tmp_path / "s.mrc")
    assert image.pixels.dtype == np.uint16
    np.testing.assert_array_equal(image.pixels, single[0])
    stack = np.stack([GRAY8, GRAY8 // 2]).astype(np.uint8)
    with mrcfile.new(tmp_path / "st.mrc") as mrc:
        mrc.set_data(stack)
    with pytest.raises(ImageReadError, match="stack of 2"):
        read_image(tmp_path / "st.mrc")
    np.testing.assert_array_equal(read_image(tmp_path / "st.mrc", page=1).pixels, GRAY8 // 2)


def test_declared_12_bit_is_checked_not_guessed(tmp_path):
    data = (GRAY16 >> 4).astype(np.uint16)  # max 4095
    path = tmp_path / "twelve.png"
    write_image(path, as_bioimage(data))
    assert read_image(path).bit_depth == 16  # never guessed
    image = read_image(path, bit_depth=12)
    assert image.bit_depth == 12 and image.max_value == 4095
    with pytest.raises(ImageReadError, match="declared 10-bit"):
        read_image(path, bit_depth=10)
    with pytest.raises(ImageReadError, match="8-bit data cannot be declared"):
        as_bioimage(GRAY8, bit_depth=12)


def test_alpha_palette_float_and_stack_rules(tmp_path):
    opaque = np.dstack([RGB8, np.full(GRAY8.shape, 255, np.uint8)])
    Image.fromarray(opaque, "RGBA").save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(read_image(tmp_path / "opaque.png").pixels, RGB8)
    translucent = opaque.copy()
    translucent[0, 0, 3] = 10
    Image.fromarray(translucent, "RGBA").save(tmp_path / "alpha.png")
    with pytest.raises(ImageReadError, match="alpha"):
        read_image(tmp_path / "alpha.png")
    Image.fromarray(RGB8).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "pal.png")
    pal = read_image(tmp_path / "pal.png")
    assert pal.channels == 3 and pal.pixels.dtype == np.uint8
    tifffile.imwrite(tmp_path / "f.tif", GRAY8.astype(np.float32))
    with pytest.raises(ImageReadError, match="floating-point"):
        read_image(tmp_path / "f.tif")
    # photometric given: without it tifffile writes a (4, H, W) array as one planar RGBA image
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([GRAY8, GRAY8, GRAY8, GRAY8]), photometric="minisblack")
    with pytest.raises(ImageReadError, match="pass page"):
        read_image(tmp_path / "stack.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "stack.tif", page=3).pixels, GRAY8)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="cannot read image"):
        read_image(tmp_path / "broken.png")
    (tmp_path / "x.bmpx").write_bytes(b"123")
    with pytest.raises(ImageReadError, match="unsupported file type"):
        read_image(tmp_path / "x.bmpx")
    with pytest.raises(ImageReadError, match="negative|outside"):
        as_bioimage(np.array([[-1, 2]], dtype=np.int16))
    with pytest.raises(ImageReadError, match="channels"):
        as_bioimage(np.zeros((4, 4, 5), np.uint8))


def test_upload_bytes_and_bioimage_properties(tmp_path):
    write_image(tmp_path / "u.png", as_bioimage(RGB16))
    image = read_image_bytes((tmp_path / "u.png").read_bytes(), "upload.png")
    assert isinstance(image, BioImage) and image.name == "upload"
    assert (image.height, image.width, image.channels, image.bit_depth) == (37, 53, 3, 16)
    assert image.max_value == 65535
