"""Contact sheets: one row per level, thumbnails at their places, input errors."""
import numpy as np
import pytest

from nuwa_xl_jax.io import contact_sheets

FRED = "fred jumps in the desert"
WILMA = "wilma walks left in the cave"


def test_contact_sheet_rows_and_thumbnails(tmp_path):
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    level_indices = [[0, 15, 30], list(range(31))]
    collector = contact_sheets.KeyframeCollector(level_indices, max_per_row=4)
    video = np.zeros((31, 16, 16, 3), np.uint8)
    video[:] = colours[np.arange(31) % 3][:, None, None]
    for i in range(0, 31, 8):
        collector.add(video[i:i + 8])
    levels = collector.levels
    assert [list(lv.indices) for lv in levels] == [[0, 15, 30], [0, 10, 20, 30]]
    assert [lv.total for lv in levels] == [3, 31]
    path = str(tmp_path / "sheet.png")
    prompts = [FRED] * 16 + [WILMA] * 15
    sheet = contact_sheets.contact_sheet(levels, path, prompts, thumb_height=32)
    cols, th, tw = 4, 32, 32
    row_h = th + contact_sheets.INDEX_HEIGHT + contact_sheets.GAP
    assert (
        sheet.size[0]
        >= contact_sheets.LABEL_WIDTH + cols * (tw + contact_sheets.GAP) + contact_sheets.GAP
    )
    assert sheet.size[1] == contact_sheets.GAP + 2 * row_h + 12 * 2 + contact_sheets.GAP
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape[:2] == sheet.size[::-1]
    for k, lv in enumerate(levels):  # each thumbnail shows its frame, at its place
        for j, i in enumerate(lv.indices):
            y = contact_sheets.GAP + k * row_h + th // 2
            x = contact_sheets.LABEL_WIDTH + j * (tw + contact_sheets.GAP) + tw // 2
            np.testing.assert_array_equal(pixels[y, x], colours[i % 3])
    with pytest.raises(FileExistsError, match=r"sheet.png' already exists"):
        contact_sheets.contact_sheet(levels, path)
    wide = contact_sheets.contact_sheet(
        [(np.arange(40), video[np.arange(40) % 31])],
        path,
        overwrite=True,
        thumb_height=32,
        max_per_row=16,
    )
    assert (
        wide.size[0]
        == contact_sheets.LABEL_WIDTH + 16 * (tw + contact_sheets.GAP) + contact_sheets.GAP
    )


def test_contact_sheet_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r"level 0: frames must be uint8"):
        contact_sheets.contact_sheet([(np.arange(2), np.zeros((2, 8, 8, 3), np.float32))],
                         str(tmp_path / "s.png"))
    with pytest.raises(ValueError, match=r"level 0: 3 indices but 2 frames"):
        contact_sheets.contact_sheet([(np.arange(3), np.zeros((2, 8, 8, 3), np.uint8))],
                         str(tmp_path / "s.png"))
    with pytest.raises(ValueError, match=r"2 labels for 1 rows"):
        contact_sheets.contact_sheet([(np.arange(2), np.zeros((2, 8, 8, 3), np.uint8))],
                                     str(tmp_path / "s.png"), labels=["dod", "ar"])


def test_row_labels_replace_the_level_names(tmp_path):
    level = [(np.arange(2), np.full((2, 8, 8, 3), 200, np.uint8))]
    default = np.asarray(contact_sheets.contact_sheet(level, str(tmp_path / "a.png")))
    named = np.asarray(contact_sheets.contact_sheet(level, str(tmp_path / "b.png"),
                                                    labels=["artv"]))
    left = slice(0, contact_sheets.LABEL_WIDTH)
    assert (default[:, left] != named[:, left]).any()  # the label column differs
    np.testing.assert_array_equal(default[:, contact_sheets.LABEL_WIDTH:],
                                  named[:, contact_sheets.LABEL_WIDTH:])
