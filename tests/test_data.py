import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxnas import data
from jaxnas.errors import JaxnasError


def test_embedded_digits_needs_no_network():
    ds = data.load_digits()
    assert ds.x_train.shape[1:] == (8, 8, 1) and len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.num_classes == 10 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # the fixed split never moves an image between train and test
    assert len(ds.x_test) == 359 and np.array_equal(data.load_digits().y_test, ds.y_test)


def test_tfds_by_name_with_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_dataset("cifar10")
    assert ds.x_train.shape == (12, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.num_classes == 10 and data.resolve_augment("auto", "cifar10") == "crop_flip"


def test_missing_tfds_dataset_says_how_to_prepare(tmp_path):
    with pytest.raises(JaxnasError, match=r"dataset 'svhn_cropped' .* not prepared in .*jaxnas prepare svhn_cropped"):
        data.load_dataset("svhn_cropped", data_dir=str(tmp_path))
    with pytest.raises(JaxnasError, match="unknown dataset 'imagenet9'; allowed: digits"):
        data.load_dataset("imagenet9")


def test_user_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.integers(0, 255, (50, 6, 6, 3), dtype=np.uint8), y=rng.integers(0, 4, 50))
    ds = data.load_dataset(str(path))
    assert ds.x_train.shape == (40, 6, 6, 3) and len(ds.x_test) == 10 and ds.num_classes <= 4
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((5, 6, 6)), y=np.zeros(4, np.int64))
    with pytest.raises(JaxnasError, match="5 images but 4 labels"):
        data.load_dataset(str(bad))
    with pytest.raises(JaxnasError, match="must hold arrays 'x' and 'y'"):
        np.savez(bad, images=np.zeros((5, 6, 6)))
        data.load_dataset(str(bad))


def test_crop_flip_augmentation():
    x = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1) + 1
    out = data.augment_batch(x, "crop", np.random.default_rng(0), pad=2)
    assert out.shape == x.shape
    for img, src in zip(out, x):
        # every crop is a window of the zero-padded source
        padded = np.pad(src, ((2, 2), (2, 2), (0, 0)))
        assert any(np.array_equal(img, padded[i:i + 4, j:j + 4]) for i in range(5) for j in range(5))
    flipped = data.augment_batch(np.repeat(x[:1], 64, 0), "crop_flip", np.random.default_rng(1), pad=0)
    n_flipped = sum(np.array_equal(f, x[0, :, ::-1]) for f in flipped)
    assert 10 < n_flipped < 54


def test_crop_flip_is_each_image_window_at_its_drawn_offset_then_its_flip():
    # against the per-image definition (torchvision's RandomCrop(padding) then RandomHorizontalFlip),
    # with the draws replayed: offsets dy for the whole batch, then dx, then the flips
    x = np.random.default_rng(3).integers(0, 256, (6, 5, 7, 3), dtype=np.uint8)
    out = data.augment_batch(x, "crop_flip", np.random.default_rng(9), pad=3, total=8, part=slice(2, 8))
    rng = np.random.default_rng(9)
    dy, dx, flip = rng.integers(0, 7, 8)[2:], rng.integers(0, 7, 8)[2:], (rng.random(8) < 0.5)[2:]
    for k in range(6):
        window = np.pad(x[k], ((3, 3), (3, 3), (0, 0)))[dy[k]:dy[k] + 5, dx[k]:dx[k] + 7]
        np.testing.assert_array_equal(out[k], window[:, ::-1] if flip[k] else window)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and 0 < flip.sum() < 6


def test_cutout_zeroes_the_square_about_each_drawn_centre_clipped_at_the_borders():
    # DARTS's Cutout: rows [cy - L/2, cy + L/2) and columns [cx - L/2, cx + L/2), centres drawn for the
    # whole batch (cy for all, then cx), the rows ``part`` of it kept
    x = np.random.default_rng(4).normal(size=(40, 9, 7, 2)).astype(np.float32)
    out = data.cutout(x, 4, np.random.default_rng(5), total=50, part=slice(10, 50))
    rng = np.random.default_rng(5)
    cy, cx = rng.integers(0, 9, 50)[10:], rng.integers(0, 7, 50)[10:]
    for k in range(40):
        r, c = np.arange(9)[:, None], np.arange(7)[None, :]
        square = (r >= cy[k] - 2) & (r < cy[k] + 2) & (c >= cx[k] - 2) & (c < cx[k] + 2)
        np.testing.assert_array_equal(out[k], np.where(square[..., None], 0.0, x[k]))
    assert {int(v) for v in cy} >= {0, 8} and np.array_equal(x, np.random.default_rng(4).normal(size=x.shape)
                                                             .astype(np.float32))  # borders drawn; x untouched


def test_batches_are_a_pure_function_of_seed_epoch_step():
    ds = data.load_digits()
    mean, std = ds.mean_std()
    tr, va = data.search_split(len(ds.x_train), 0.5)
    assert len(tr) == len(ds.x_train) // 2 and tr[-1] + 1 == va[0]
    b1 = data.Batcher(ds.x_train, ds.y_train, tr, 32, mean, std, "none", seed=3, stream=0)
    b2 = data.Batcher(ds.x_train, ds.y_train, tr, 32, mean, std, "none", seed=3, stream=0)
    np.testing.assert_array_equal(b1.batch(2, 5)["x"], b2.batch(2, 5)["x"])
    assert not np.array_equal(b1.batch(2, 5)["y"], b1.batch(3, 5)["y"])
    epoch = np.concatenate([b["y"] for b in b1.epoch(0)])
    assert len(epoch) == b1.steps_per_epoch * 32
    with pytest.raises(JaxnasError, match="train_portion"):
        data.search_split(10, 1.0)


def test_process_parts_of_a_batch_make_the_whole_batch():
    ds = data.load_digits()
    mean, std = ds.mean_std()
    b = data.Batcher(ds.x_train, ds.y_train, np.arange(len(ds.x_train)), 32, mean, std, "crop_flip", seed=1,
                     stream=0, cutout=3)
    whole = b.batch(1, 4)
    parts = [b.batch(1, 4, part=(i, 4)) for i in range(4)]
    for k in ("x", "y"):
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
    with pytest.raises(JaxnasError, match="not divisible by the process count 3"):
        b.batch(0, 0, part=(0, 3))
