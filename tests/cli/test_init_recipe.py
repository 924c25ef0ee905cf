"""``station init-recipe`` on synthetic products the test writes: each proposal says what it
measured, loads, and its crops hold the part in every image."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.cli import main
from station.config import load_recipe
from tests.vision.products import (
    keyed_disc_image,
    write_blocks,
    write_images,
    write_parts,
    write_surfaces,
)

N = 16


def _propose(data: Path, tmp_path: Path, capsys) -> tuple[Path, str]:
    out = tmp_path / "proposed.toml"
    assert main(["init-recipe", "--data", str(data), "--out", str(out)]) == 0, capsys.readouterr()
    capsys.readouterr()
    # the comments as one line, so a test can read a sentence the file wraps
    text = " ".join(line.strip().lstrip("#").strip() for line in out.read_text().splitlines())
    return out, text


def _crops(recipe: Path, data: Path, tmp_path: Path, capsys, size: int = 128) -> list[dict]:
    out = tmp_path / "crops"
    rc = main(["crops", "--recipe", str(recipe), "--data", str(data), "--out", str(out),
               "--size", str(size), "--no-progress"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err  # a part found in every image
    return [json.loads(line) for line in (out / "crops.jsonl").read_text().splitlines()]


def _part_inside(crop: np.ndarray, polarity: str) -> bool:
    """The crop's part pixels stay off its edge: the whole part is in the crop."""
    gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    part = gray < 128 if polarity == "dark_on_light" else gray > 128
    edge = np.concatenate([part[0], part[-1], part[:, 0], part[:, -1]])
    return part.sum() > 0.05 * part.size and not edge.any()


@pytest.mark.parametrize("polarity", ["dark_on_light", "light_on_dark"])
def test_parts_on_a_plate_become_a_part_to_find_turned_head_left(tmp_path, capsys, polarity):
    data = write_parts(tmp_path / "d", N, seed=1, polarity=polarity)
    recipe_path, text = _propose(data, tmp_path, capsys)
    recipe = load_recipe(recipe_path)
    assert recipe.localize.method == "segment"
    assert recipe.localize.polarity == polarity
    assert recipe.align.orientation == "head" and recipe.align.crop_mode == "length"
    assert 0.25 <= recipe.align.crop_aspect <= 0.6  # a long part gets a long crop
    assert recipe.camera.pixel_format == "mono8"
    # each decision says what it measured
    assert f"{polarity}: one part found in {N} of {N} images" in text
    assert "one end is at least 1.25x wider in 100% of them" in text
    assert "all 16 images measured are single-channel" in text
    # a part to find keeps the good images photographed with the defects for its thresholds
    assert recipe.models.good_train_share == 0
    rows = _crops(recipe_path, data, tmp_path, capsys)
    assert len(rows) == N and all(r["found"] for r in rows)
    for r in rows:
        crop = cv2.imread(str(tmp_path / "crops" / r["crop"]), cv2.IMREAD_UNCHANGED)
        assert crop.shape[1] == 128 and crop.shape[0] < 100
        assert _part_inside(crop, polarity), r["file"]
        # head (the wide end) on the left: more part in the left third than the right
        part = crop < 128 if polarity == "dark_on_light" else crop > 128
        third = crop.shape[1] // 3
        assert part[:, :third].sum() > part[:, -third:].sum()


def test_parts_without_a_wide_end_are_levelled_with_their_tip_to_one_side(tmp_path, capsys):
    # no end is 1.25x wider, but one is pointed: the axis levels the part and the pattern
    # learned around the centre tells the ends apart, so every tip lands on one side
    data = write_parts(tmp_path / "d", N, seed=2, head=False)
    recipe_path, text = _propose(data, tmp_path, capsys)
    recipe = load_recipe(recipe_path)
    assert recipe.localize.method == "segment" and recipe.align.orientation == "axis_pattern"
    assert len(recipe.align.pattern) == 216 and "the ends told apart" not in text
    assert "the end that goes right read from their grey pattern" in text
    rows = _crops(recipe_path, data, tmp_path, capsys)
    assert all(r["found"] for r in rows)
    ends = []
    for r in rows:  # the flat end holds more of the part than the pointed one
        part = cv2.imread(str(tmp_path / "crops" / r["crop"]), cv2.IMREAD_UNCHANGED) < 128
        tenth = part.shape[1] // 10
        ends.append(part[:, tenth:2 * tenth].sum() > part[:, -2 * tenth:-tenth].sum())
    assert all(ends) or not any(ends), ends


def test_short_parts_are_levelled_when_that_makes_their_crops_alike(tmp_path, capsys):
    # a block a third longer than wide: too short for the elongated rule (1.6x), but turned
    # any way it still has a long side, and levelled its crops are nearly all alike
    turning = write_blocks(tmp_path / "turning", N, seed=5)
    recipe_path, text = _propose(turning, turning, capsys)
    assert load_recipe(recipe_path).align.orientation == "axis"
    assert "they lie at any angle" in text and "only the long axis is levelled" in text
    rows = _crops(recipe_path, turning, tmp_path, capsys)
    assert all(r["found"] for r in rows)
    for r in rows:  # levelled: the block's long side runs along the crop's width
        crop = cv2.imread(str(tmp_path / "crops" / r["crop"]), cv2.IMREAD_UNCHANGED)
        ys, xs = np.nonzero(crop < 128)
        assert np.ptp(xs) > 1.2 * np.ptp(ys), r["file"]

    # fixtured within a few degrees, levelling still takes out what the fixture leaves
    fixtured = write_blocks(tmp_path / "fixtured", N, seed=7, any_angle=False)
    recipe_path, text = _propose(fixtured, fixtured, capsys)
    assert load_recipe(recipe_path).align.orientation == "axis"
    assert "they lie fixtured" in text

    # a plain disc has no long side and no pattern: "levelling" it on its second moments or
    # its grey levels turns each one by chance, its crops are no more alike, and it is left
    # as it lies
    discs = write_blocks(tmp_path / "discs", N, seed=6, disc=True)
    recipe_path, text = _propose(discs, discs, capsys)
    assert load_recipe(recipe_path).align.orientation == "none"
    assert "no long side or pattern to turn them by" in text
    assert not load_recipe(recipe_path).align.pattern  # nothing learned to carry


def test_round_parts_with_a_key_are_turned_by_their_pattern(tmp_path, capsys):
    # a textured disc with a key notch and a bore, at any angle: no long side, but the
    # pattern every good part shares is learned and each crop is turned onto it
    data = write_images(tmp_path / "d", N, keyed_disc_image, seed=9)
    recipe_path, text = _propose(data, tmp_path, capsys)
    recipe = load_recipe(recipe_path)
    assert recipe.align.orientation == "pattern" and recipe.align.crop_aspect == 1.0
    assert len(recipe.align.pattern) == 216
    assert "matches the one learned from them (align.pattern)" in text
    assert "pattern 0." in text and "none 0." in text  # the spreads it compared
    rows = _crops(recipe_path, data, tmp_path, capsys, size=96)
    notch = np.stack([cv2.imread(str(tmp_path / "crops" / r["crop"]), cv2.IMREAD_UNCHANGED) > 160
                      for r in rows])
    # the key notch (plate inside the disc's outline) is in the same place in every crop:
    # the pixels it covers in most crops are plate in nearly all of them
    inner = notch[:, 12:-12, 12:-12]
    common = inner.mean(axis=0)
    assert (common > 0.5).sum() > 20 and (common[common > 0.1] > 0.5).mean() > 0.6


def test_a_part_that_falls_apart_into_pieces_is_found_whole(tmp_path, capsys):
    # a light band across the block splits it in two at the default merge gap (0.03)
    data = write_blocks(tmp_path / "d", N, seed=7, banded=True)
    recipe_path, text = _propose(data, tmp_path, capsys)
    recipe = load_recipe(recipe_path)
    assert recipe.localize.method == "segment" and recipe.localize.merge_gap_frac >= 0.1
    assert "fell apart into several" in text and "(found in 0 of 16)" in text
    rows = _crops(recipe_path, data, tmp_path, capsys)
    assert all(r["found"] for r in rows)
    for r in rows:  # both halves in the crop, the whole block
        crop = cv2.imread(str(tmp_path / "crops" / r["crop"]), cv2.IMREAD_UNCHANGED)
        assert _part_inside(crop, "dark_on_light"), r["file"]


def test_surfaces_filling_the_image_become_a_fixed_region(tmp_path, capsys):
    data = write_surfaces(tmp_path / "d", 20, seed=3)
    recipe_path, text = _propose(data, tmp_path, capsys)
    recipe = load_recipe(recipe_path)
    assert recipe.localize.method == "fixed" and recipe.localize.roi == (0, 0, 0, 0)
    assert recipe.align.crop_mode == "region" and recipe.align.orientation == "none"
    assert recipe.trigger.mode != "free_run"
    # surfaces are taller than wide on the whole: the crop follows the images' median
    shapes = [cv2.imread(str(p), 0).shape for p in sorted((data / "good").iterdir())]
    median = float(np.median([h / w for h, w in shapes]))
    assert recipe.align.crop_aspect == pytest.approx(median, abs=0.05)
    assert "the image is the part" in text and "different sizes" in text
    # a mirror image may be a defect (a print, a handedness): the engineer says so, not us
    assert recipe.models.flips == "none" and "a good part's mirror image" in text
    # the share both measured products train their classifier on, said where the engineer reads
    assert recipe.models.defect_train_share == 0.7 and "the rest choose the" in text
    assert recipe.models.good_train_share == 0.7 and "both models learn" in text
    rows = _crops(recipe_path, data, tmp_path, capsys, size=64)
    assert len(rows) == 20 and all(r["found"] for r in rows)
    # each crop is its whole image stretched: the crop's mean follows the image's
    for r in rows[:5]:
        image = cv2.imread(str(data / r["file"]), 0)
        crop = cv2.imread(str(tmp_path / "crops" / r["crop"]), 0)
        assert abs(float(crop.mean()) - float(image.mean())) < 3.0


def test_colour_parts_are_proposed_in_colour(tmp_path, capsys):
    data = write_parts(tmp_path / "d", N, seed=4, colour=True)
    recipe_path, text = _propose(data, tmp_path, capsys)
    recipe = load_recipe(recipe_path)
    assert recipe.camera.pixel_format == "bgr8" and recipe.localize.method == "segment"
    assert "above 6 = colour" in text
    rows = _crops(recipe_path, data, tmp_path, capsys)
    assert all(r["found"] for r in rows)
    crop = cv2.imread(str(tmp_path / "crops" / rows[0]["crop"]), cv2.IMREAD_UNCHANGED)
    assert crop.ndim == 3  # the crops keep their colour


def test_grey_stored_as_colour_stays_grey(tmp_path, capsys):
    data = write_parts(tmp_path / "d", 6, seed=5)
    for p in (data / "good").iterdir():  # the same grey, written as three equal channels
        cv2.imwrite(str(p), cv2.cvtColor(cv2.imread(str(p), 0), cv2.COLOR_GRAY2BGR))
    recipe_path, text = _propose(data, tmp_path, capsys)
    assert load_recipe(recipe_path).camera.pixel_format == "mono8"
    assert "grey stored as colour" in text


def test_train_good_of_a_data_set_is_measured(tmp_path, capsys):
    good = write_parts(tmp_path / "d" / "train", 8, seed=6)  # d/train/good
    (tmp_path / "d" / "test" / "scratch").mkdir(parents=True)  # defects are not measured
    recipe_path, text = _propose(tmp_path / "d", tmp_path, capsys)
    assert f"{(good / 'good').resolve().as_posix()}" in text
    assert load_recipe(recipe_path).camera.device == str((good / "good").resolve())


def test_a_folder_without_images_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    out = tmp_path / "r.toml"
    assert main(["init-recipe", "--data", str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no images" in err[0] and str(tmp_path / "empty") in err[0]
    assert not out.exists()
    out.write_text("keep me")
    data = write_parts(tmp_path / "d", 4)
    assert main(["init-recipe", "--data", str(data), "--out", str(out)]) == 2
    assert "exists; --force" in capsys.readouterr().err and out.read_text() == "keep me"


def test_the_crops_command_it_suggests_runs_on_the_folder_it_measured(tmp_path, capsys):
    good = write_parts(tmp_path / "d" / "train", 8, seed=8) / "good"  # d/train/good alone
    out = tmp_path / "r.toml"
    assert main(["init-recipe", "--data", str(good), "--out", str(out)]) == 0
    summary = capsys.readouterr().out.strip().splitlines()
    # the summary says the crop in pixels, as the command it suggests will cut it
    said = re.search(r"crop (\d+) x (\d+) px \(width x height", summary[-2])
    assert said, summary[-2]
    line = summary[-1]
    suggested = line.split("`")[1].split()  # `station crops --recipe ... --size N`
    assert suggested[:2] == ["station", "crops"]
    argv = suggested[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "crops")
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "8 images from" in printed and "a folder of good images" in printed
    assert "status: ok 8" in printed and (tmp_path / "crops" / "montage.png").is_file()
    crop = cv2.imread(str(tmp_path / "crops" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert (crop.shape[1], crop.shape[0]) == (int(said[1]), int(said[2]))
    # named for its data set, not for the folder every product's good images sit in (one
    # name for all gave them one records database)
    recipe = load_recipe(out)
    assert recipe.product.name == "d" and "/.station/d/" in str(recipe.records.database)


def test_a_downscaled_crop_is_said_in_the_pixels_it_is_cut_at(tmp_path, capsys):
    """A tall surface shrunk to what training affords: the recipe's comment and the summary
    give the crop's height as station crops and station train cut it (the comment said
    128 x 340 where 344 is cut)."""
    write_images(tmp_path / "d", 4,
                 lambda rng: (rng.random((960, 360)) * 255).astype(np.uint8), seed=1)
    out = tmp_path / "r.toml"
    assert main(["init-recipe", "--data", str(tmp_path / "d"), "--out", str(out)]) == 0
    said = re.search(r"crop (\d+) x (\d+) px \(width x height", capsys.readouterr().out)
    text = " ".join(line.strip().lstrip("#").strip() for line in out.read_text().splitlines())
    comment = re.search(r"keeps a crop of (\d+) x (\d+) px", text)
    assert said and comment and comment.groups() == said.groups() == ("128", "344")


def test_unreadable_images_are_named_and_the_rest_measured(tmp_path, capsys):
    data = write_parts(tmp_path / "d", 8, seed=7)
    (data / "good" / "zz_broken.png").write_bytes(b"not a png")  # sorted last: always sampled
    (data / "good" / "zz_empty.png").write_bytes(b"")
    for name in ("zz_x1.png", "zz_x2.png"):
        (data / "good" / name).write_bytes(b"also not a png")
    out = tmp_path / "r.toml"
    assert main(["init-recipe", "--data", str(data), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("8 of 12 images measured")
    skipped = [line.strip() for line in lines if line.strip().startswith("skipped")]
    assert len(skipped) == 4  # three named, the rest counted
    assert any("zz_broken.png: not a readable image" in line for line in skipped)
    assert any("zz_empty.png: empty file" in line for line in skipped)
    assert skipped[-1] == "skipped 1 more unreadable images"
    assert load_recipe(out).localize.method == "segment"  # the 8 good ones still decided it
    assert out.read_text().count("# Not readable, left out: ") == 4  # the recipe names all
    for p in (data / "good").glob("0*.png"):  # none readable: one line, naming a file
        p.write_bytes(b"")
    assert main(["init-recipe", "--data", str(data), "--out", str(out), "--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of the 12 images measured could be read" in err[0]
    assert ".png:" in err[0]


def test_when_both_polarities_find_parts_the_smaller_parts_win():
    from station.config.propose import _polarity
    from station.vision.localize import Localization

    def found(length: float, width: float) -> Localization:
        return Localization("ok", (0, 0, 1, 1), (0.0, 0.0), 0.0, length, width)

    part, halo = [found(150, 50)] * 10, [found(200, 115)] * 10
    results = {"dark_on_light": halo, "light_on_dark": part}
    assert _polarity(results, {"dark_on_light": 10, "light_on_dark": 10}, 10) == "light_on_dark"
    # clearly more images found one way: that way, whatever the sizes
    results = {"dark_on_light": halo, "light_on_dark": part[:5]}
    assert _polarity(results, {"dark_on_light": 10, "light_on_dark": 5}, 10) == "dark_on_light"


def test_when_both_polarities_find_parts_the_one_the_part_contrasts_with_wins():
    # the halo a light-on-dark search finds around a dark part holds the part: its core is
    # darker than its surroundings, not lighter. The contrast decides before the size does:
    # here the halo's box is the smaller one, and the size rule alone would take it
    from station.config.propose import _polarity
    from station.vision.localize import Localization

    image = np.full((120, 160), 205, np.uint8)
    cv2.rectangle(image, (50, 40), (110, 80), 60, -1)  # a dark part, 61 x 41 px
    part = Localization("ok", (50, 40, 61, 41), (80.0, 60.0), 0.0, 61.0, 41.0)
    halo = Localization("ok", (55, 45, 51, 31), (80.0, 60.0), 0.0, 51.0, 31.0)
    results = {"dark_on_light": [part] * 4, "light_on_dark": [halo] * 4}
    ok = {"dark_on_light": 4, "light_on_dark": 4}
    assert _polarity(results, ok, 4) == "light_on_dark"  # sizes alone: the smaller box
    assert _polarity(results, ok, 4, [image] * 4) == "dark_on_light"


def test_product_name_doctests_hold():
    import doctest

    import station.cli.init_recipe

    result = doctest.testmod(station.cli.init_recipe)
    assert result.attempted and not result.failed
