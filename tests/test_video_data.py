"""Video data: bouncing balls (closed-form elastic motion), moving digits, folders of clips, UCF101."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from gen_bench.data.video import BouncingBalls, MovingDigits, reflect, render_balls
from gen_bench.data.video_folder import UCF101, VideoFolderSource, decode_clips, scan_clips

from conftest import compose_train


def _clips(source) -> torch.Tensor:
    ds = source.load()
    return ds[torch.arange(len(ds))][0]


def test_bouncing_balls_shapes_ranges_and_determinism():
    src = BouncingBalls(image_size=16, frames=6, num_samples=40, num_balls=3, channels=3, seed=1)
    x = _clips(src)
    assert src.spec.kind == "video" and src.spec.shape == (3, 6, 16, 16) and not src.spec.labeled
    assert x.shape == (40, 3, 6, 16, 16) and x.dtype == torch.float32
    assert x.min() == 0 and x.max() == 1  # black background, saturated ball centres
    assert torch.equal(x, _clips(BouncingBalls(image_size=16, frames=6, num_samples=40, num_balls=3,
                                               channels=3, seed=1)))
    assert not torch.equal(x, _clips(BouncingBalls(image_size=16, frames=6, num_samples=40, num_balls=3,
                                                   channels=3, seed=2)))
    assert src.positions.shape == src.velocities.shape == (40, 6, 3, 2)


def test_balls_without_collisions_follow_the_closed_form_of_elastic_walls():
    """Free flight folded into [r, S - r] (a triangle wave): the exact path of elastic wall bounces."""
    src = BouncingBalls(image_size=16, frames=12, num_samples=200, num_balls=2, radius=0.125,
                        speed=(0.1, 0.25), collisions=False, substeps=3, seed=0)
    src.load()
    p, v, r, s = src.positions, src.velocities, src.radius_px, 16.0
    assert (p >= r - 1e-9).all() and (p <= s - r + 1e-9).all()  # always wholly inside the frame
    t = np.arange(12)[None, :, None, None]
    unfolded = p[:, :1] + (v[:, :1]) * t
    assert np.allclose(p, reflect(unfolded, r, s - r), atol=1e-9)
    speed = np.linalg.norm(v, axis=-1)
    assert np.allclose(speed, speed[:, :1], atol=1e-12)  # elastic: no speed lost at a wall
    flips = np.sign(v[:, 1:]) != np.sign(v[:, :-1])
    assert flips.any() and np.allclose(np.abs(v[:, 1:]), np.abs(v[:, :-1]))  # components only flip sign
    # a component flips exactly when the folded path turns (its free position crossed a wall)
    legs = np.floor((unfolded - r) / (s - 2 * r))
    assert np.array_equal(flips, legs[:, 1:] != legs[:, :-1])


def test_ball_collisions_conserve_energy_and_keep_balls_apart():
    src = BouncingBalls(image_size=32, frames=16, num_samples=100, num_balls=4, radius=0.1, speed=(0.05, 0.1),
                        substeps=8, seed=3)
    src.load()
    v, p, r = src.velocities, src.positions, src.radius_px
    energy = (v**2).sum((2, 3))
    assert np.allclose(energy, energy[:, :1], rtol=1e-12)  # equal masses, elastic: kinetic energy kept
    d = np.linalg.norm(p[:, :, :, None] - p[:, :, None, :], axis=-1) + np.eye(4) * 1e9
    closing = 2 * np.linalg.norm(v, axis=-1).max() / 8  # the most two balls close in on in one substep
    assert d.min() > 2 * r - closing and d.min() < 2 * r + closing  # they touch, and barely overlap
    momentum = v.sum(2)  # (N, T, 2): ball collisions keep it; only walls change it
    wall = ((p < r + 3.2) | (p > 32 - r - 3.2)).any(2)  # a ball within one frame's travel of a wall
    kept = ~wall[:, :-1] & ~wall[:, 1:]
    assert kept.sum() > 100 and np.allclose(momentum[:, 1:][kept], momentum[:, :-1][kept])
    nocoll = BouncingBalls(image_size=32, frames=16, num_samples=100, num_balls=4, radius=0.1,
                           speed=(0.05, 0.1), seed=3, collisions=False)
    nocoll.load()
    dn = np.linalg.norm(nocoll.positions[:, :, :, None] - nocoll.positions[:, :, None, :], axis=-1)
    assert (dn + np.eye(4) * 1e9).min() < 1  # without collisions balls do pass through each other


def test_balls_are_rendered_as_antialiased_discs_at_their_positions():
    pos = np.array([[[[5.3, 9.8]]]])  # (N, T, B, 2): one ball
    img = render_balls(pos, radius=2.5, size=16)[0, 0, 0]  # (S, S)
    yy, xx = np.mgrid[0:16, 0:16] + 0.5
    expected = np.clip(2.5 + 0.5 - np.hypot(xx - 5.3, yy - 9.8), 0, 1)
    assert np.allclose(img, expected, atol=1e-6)
    w = img / img.sum()
    assert abs((w * xx).sum() - 5.3) < 0.03 and abs((w * yy).sum() - 9.8) < 0.03  # sampled disc
    rgb = render_balls(np.array([[[[4.0, 4.0], [12.0, 12.0]]]]), 2.0, 16, channels=3)[0, :, 0]
    assert rgb.shape == (3, 16, 16) and not np.allclose(rgb[:, 3, 3], rgb[:, 11, 11])  # one colour each


def test_moving_digits_bounce_inside_the_canvas_and_are_drawn_where_they_are():
    src = MovingDigits(image_size=24, frames=10, num_samples=50, num_digits=2, digit_size=10,
                       speed=(0.1, 0.2), seed=4)
    ds = src.load()
    canvas, x = ds.x, ds[torch.arange(len(ds))][0]  # uint8 and float views of (N, 1, T, S, S)
    assert x.shape == (50, 1, 10, 24, 24) and src.spec.shape == (1, 10, 24, 24)
    assert 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, _clips(MovingDigits(image_size=24, frames=10, num_samples=50, num_digits=2,
                                              digit_size=10, speed=(0.1, 0.2), seed=4)))
    p, v = src.positions, src.velocities
    assert (p >= 0).all() and (p <= 14).all()  # the 10 px digit stays on the 24 px canvas
    speed = np.linalg.norm(v, axis=-1)
    assert np.allclose(speed, speed[:, :1]) and (speed > 0).all()
    step = np.linalg.norm(np.diff(p, axis=1), axis=-1)
    assert (step <= speed[:, :-1] + 1e-9).all() and np.isclose(step, speed[:, :-1]).mean() > 0.5
    assert ((v[:, 1:] * v[:, :-1]) < 0).any()  # some bounces
    # an independent redraw: each glyph at its rounded corner, overlaps take the brighter pixel
    from gen_bench.data.digits import load_sklearn_digits

    glyphs = load_sklearn_digits(10)[0][:, 0]
    for i in range(6):
        for t in range(10):
            expected = torch.zeros(24, 24, dtype=torch.uint8)
            for j in range(2):
                cx, cy = np.rint(p[i, t, j]).astype(int)
                region = expected[cy : cy + 10, cx : cx + 10]
                expected[cy : cy + 10, cx : cx + 10] = torch.maximum(region, glyphs[src.digit_index[i, j]])
            assert torch.equal(canvas[i, 0, t], expected)


@pytest.mark.parametrize("data", ["bouncing_balls", "moving_digits"])
def test_video_configs_serve_batches_through_the_datamodule(tmp_path, data):
    cfg = compose_train([f"data={data}", "data.source.num_samples=100", "data.batch_size=8",
                         "data.source.frames=4"], tmp_path)
    dm = instantiate(cfg.data)
    c, t, s = dm.spec.shape[0], 4, cfg.data.image_size
    assert dm.spec.kind == "video" and dm.spec.shape == (c, t, s, s)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, c, t, s, s) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert (y == -1).all() and len(dm.train_set) == 90 and len(dm.heldout_set) == 10
    again, _ = next(iter(instantiate(cfg.data).train_dataloader()))
    assert torch.equal(x, again)


# --- folders of clips -------------------------------------------------------------------------------
def _frame(value: int, size: int = 8, rgb: bool = True) -> np.ndarray:
    """A frame whose every pixel holds ``value`` (so a decoded frame tells which one it was)."""
    shape = (size, size, 3) if rgb else (size, size)
    return np.full(shape, value, dtype=np.uint8)


def _write_frames(folder, values, ext=".png"):
    folder.mkdir(parents=True)
    for i, v in enumerate(values):
        Image.fromarray(_frame(v)).save(folder / f"f{i:03d}{ext}")


def _write_video(path, values, size=16, codec="mpeg4"):
    import av  # PyAV decodes (and here encodes) video files; see gen_bench.data.video_folder

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for v in values:
            for packet in stream.encode(av.VideoFrame.from_ndarray(_frame(v, size), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_video_folder_reads_frame_folders_gifs_and_videos_and_reports_bad_clips(tmp_path):
    root = tmp_path / "clips"
    values = [10 * i for i in range(12)]
    _write_frames(root / "a" / "clip1", values)
    _write_frames(root / "a" / "clip2", [v + 100 for v in values], ext=".jpg")
    gif = [Image.fromarray(_frame(v, rgb=False)) for v in values]
    gif[0].save(root / "b.gif", save_all=True, append_images=gif[1:], duration=50)
    _write_video(root / "c.mp4", values)
    _write_frames(root / "short", values[:3])  # too short for a window
    (root / "broken.avi").write_bytes(b"not a video at all")
    (root / ".hidden.mp4").write_bytes(b"ignored")
    assert [p.relative_to(root).as_posix() for p in scan_clips(root)] == [
        "a/clip1", "a/clip2", "b.gif", "broken.avi", "c.mp4", "short"]

    src = VideoFolderSource(path=str(root), image_size=8, frames=4, stride=2, start=1)
    assert src.spec.shape == (3, 4, 8, 8)
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable video clip\(s\)") as record:
        x = src.load().x  # uint8 (N, C, T, H, W)
    messages = [str(w.message) for w in record if "unreadable" in str(w.message)]
    assert len(messages) == 1 and "broken.avi, short" in messages[0]
    assert x.shape == (4, 3, 4, 8, 8)
    wanted = [values[1 + 2 * i] for i in range(4)]  # frames 1, 3, 5, 7
    assert x[0].float().mean((0, 2, 3)).tolist() == wanted  # PNG frames: lossless
    assert (x[1].float().mean((0, 2, 3)) - torch.tensor(wanted) - 100).abs().max() <= 3  # JPEG
    assert x[2].float().mean((0, 2, 3)).tolist() == wanted  # GIF (grey palette: exact)
    assert (x[3].float().mean((0, 2, 3)) - torch.tensor(wanted, dtype=torch.float)).abs().max() <= 4  # mpeg4

    two = decode_clips(root / "a" / "clip1", frames=3, stride=2, clips_per_video=3, image_size=8)
    assert two.shape == (2, 3, 3, 8, 8)  # windows at frames 0-4 and 6-10; the third would need 12-16
    assert two[1, 0, :, 0, 0].tolist() == [60, 80, 100]
    grey = decode_clips(root / "c.mp4", frames=2, image_size=4, channels=1)
    assert grey.shape == (1, 1, 2, 4, 4)
    with pytest.raises(FileNotFoundError, match="data.path"):
        VideoFolderSource(path=str(tmp_path / "nope")).load()
    with pytest.raises(ValueError, match="data.path"):
        VideoFolderSource(path=None).load()


def test_ucf101_reads_the_official_layout_and_split_lists(tmp_path):
    root = tmp_path / "ucf"
    with pytest.raises(FileNotFoundError, match="UCF101 not found"):
        UCF101(path=str(root)).load()
    classes = ["ApplyEyeMakeup", "Archery"]
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    train, test = [], []
    for k, name in enumerate(classes):
        (root / "UCF-101" / name).mkdir(parents=True)
        for g in (1, 2):
            rel = f"{name}/v_{name}_g0{g}_c01.avi"
            _write_video(root / "UCF-101" / rel, [40 * k + 5 * i for i in range(6)], size=16)
            (train if g == 1 else test).append(rel)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)))
    labels = [classes.index(r.split("/")[0]) + 1 for r in train]
    (lists / "trainlist01.txt").write_text("".join(f"{r} {k}\n" for r, k in zip(train, labels, strict=True)))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    src = UCF101(path=str(root), image_size=8, frames=3, stride=2, split="all", backend="pyav")
    assert src.spec.num_classes == 101 and src.spec.shape == (3, 3, 8, 8)
    with pytest.warns(UserWarning, match="2 class folders, not 101"):
        ds = src.load()
    assert ds.x.shape == (4, 3, 3, 8, 8)
    assert ds.y.tolist() == [0, 1, 0, 1]  # train list then test list; labels from the sorted class folders
    assert (ds.x[1].float().mean((0, 2, 3)) - torch.tensor([40.0, 50.0, 60.0])).abs().max() <= 4
    with pytest.warns(UserWarning, match="class folders"):
        assert len(UCF101(path=str(root), image_size=8, frames=3, split="test", backend="pyav").load()) == 2


def test_gifs_and_frame_grids_show_every_frame(tmp_path):
    from gen_bench.viz_video import clip_grid_frames, read_gif, save_frame_grid, save_gif

    clips = torch.rand(5, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    save_gif(clips, tmp_path / "a.gif", scale=2)
    frames = clip_grid_frames(clips, scale=2)  # (T, 3, H', W'): 3 clips per row, 16 px cells
    assert frames.shape == (4, 3, 2 + 2 * 18, 2 + 3 * 18)
    assert torch.equal(read_gif(tmp_path / "a.gif"), frames)  # grey GIFs are lossless
    cell = frames[2, 0, 2:18, 2 + 18 : 18 + 18]  # clip 1 at time 2, upscaled 2x
    expected = (clips[1, 0, 2] * 255).round().to(torch.uint8).repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(cell, expected)
    grid = Image.open(save_frame_grid(clips, tmp_path / "f.png", max_clips=3, scale=1))
    assert grid.size == (2 + 4 * 10, 2 + 3 * 10)  # 3 clips down, 4 frames across
