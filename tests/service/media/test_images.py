"""Hostile and odd images at the unit level; the API tests send the same through HTTP."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from service import errors
from service.config import ImageLimits
from service.media.images import decode_image, parse_data_url

LIMITS = ImageLimits(
    max_images_per_request=4, max_bytes=1_000_000, max_pixels=4_000_000, max_side=256
)


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, one tiny IDAT: a bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def decode(url: str):
    param = "messages[0].content[0]"
    mime, data = parse_data_url(url, LIMITS, param)
    return decode_image(mime, data, LIMITS, param)


@pytest.mark.parametrize(
    "fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_decodes_each_format_to_rgb(fmt, mime):
    image = decode(data_url(encode(Image.new("RGB", (40, 30), (10, 200, 30)), fmt), mime))
    assert (image.width, image.height) == (40, 30)
    assert len(image.rgb) == 40 * 30 * 3
    r, g, _ = image.to_pil().getpixel((20, 15))
    assert g > 150 and r < 60


def test_long_side_is_capped_keeping_aspect():
    image = decode(data_url(encode(Image.new("RGB", (1000, 500)))))
    assert (image.width, image.height) == (256, 128)


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    ramp = np.linspace(0, 4000, 64 * 8, dtype=np.uint16).reshape(8, 64)
    image = decode(data_url(encode(Image.fromarray(ramp))))
    pixels = np.asarray(image.to_pil())
    assert pixels.min() == 0 and pixels.max() == 255  # full range used, not all-255


def test_rgba_and_palette_become_rgb():
    for mode in ("RGBA", "P", "L", "LA"):
        assert decode(data_url(encode(Image.new(mode, (8, 8))))).to_pil().mode == "RGB"


def expect(exc_type, url, code=None):
    with pytest.raises(exc_type) as info:
        decode(url)
    assert info.value.param == "messages[0].content[0]"
    if code:
        assert info.value.code == code
    return info.value


def test_broken_base64_is_400():
    expect(errors.InvalidRequest, "data:image/png;base64,iVBOR%%%not-base64", "invalid_base64")


def test_non_base64_data_url_is_400():
    expect(errors.InvalidRequest, "data:image/png,rawbytes", "invalid_image_url")


def test_wrong_mime_is_400():
    expect(
        errors.InvalidRequest, data_url(b"%PDF-1.4", "application/pdf"), "unsupported_image_type"
    )


def test_data_url_parser_refuses_other_schemes():
    # http(s) URLs take the fetch path (service/media/fetch.py), never this parser.
    exc = expect(
        errors.InvalidRequest, "http://169.254.169.254/latest/meta-data", "invalid_image_url"
    )
    assert "169.254" not in exc.message


def test_declared_type_must_match_content():
    jpeg = encode(Image.new("RGB", (8, 8)), "JPEG")
    expect(errors.UnprocessableImage, data_url(jpeg, "image/png"))


def test_truncated_png_is_422():
    png = encode(Image.effect_noise((64, 64), 50).convert("RGB"))
    expect(errors.UnprocessableImage, data_url(png[: len(png) // 2]))


def test_garbage_bytes_are_422():
    expect(errors.UnprocessableImage, data_url(b"\x00" * 100))


def test_decompression_bomb_header_is_refused_before_decoding():
    exc = expect(errors.ImageTooLarge, data_url(png_header_only(65_000, 65_000)), "image_too_large")
    assert exc.status_code == 413


def test_pixel_limit_applies_below_pillows_own_guard():
    expect(errors.ImageTooLarge, data_url(png_header_only(2100, 2000)))


def test_byte_limit_checked_before_base64_decoding():
    url = "data:image/png;base64," + "A" * 2_000_000
    expect(errors.ImageTooLarge, url)


def test_empty_payload_is_400():
    expect(errors.InvalidRequest, "data:image/png;base64,", "invalid_image")
