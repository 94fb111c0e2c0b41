"""Anti-aliased pooling for StarDist (core/segmentation/stardist_pooling.py): the Keras layer computes what the
U-Net's torch blur_max_pool computes, StarDist networks built inside the context use it (and only they), and a
model folder whose biocodec.json says "pooling": "blurmax" is loaded with it."""
import json
import shutil

import numpy as np
import pytest

from core.segmentation.stardist_pooling import POOLINGS, blur_max_layer_class, stardist_pooling
from core.segmentation.stardist_models import MODELS_DIR, model_pooling

SMALL = dict(n_rays=8, grid=(2, 2), unet_n_depth=2, unet_n_filter_base=4, net_conv_after_unet=8, use_gpu=False)


def pool_layers(keras_model) -> list[str]:
    return [type(layer).__name__ for layer in keras_model.layers if "Pool" in type(layer).__name__]


def test_keras_blurmax_equals_the_unets_torch_blurmax():
    import torch

    from core.segmentation.tfsetup import configure_tensorflow
    from core.segmentation.unet import blur_max_pool

    configure_tensorflow()
    x = np.random.default_rng(0).normal(size=(2, 8, 6, 3)).astype(np.float32)
    keras_out = np.asarray(blur_max_layer_class()((2, 2))(x))
    torch_out = blur_max_pool(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert keras_out.shape == (2, 4, 3, 3)
    np.testing.assert_allclose(keras_out, torch_out, atol=1e-6)
    # a constant image stays constant (the blur is normalised, the padding does not leak zeros)
    assert np.allclose(np.asarray(blur_max_layer_class()((2, 2))(np.full((1, 4, 4, 1), 7.0, np.float32))), 7.0)


def test_blurmax_layer_round_trips_through_its_keras_config():
    # Keras 3 records the constructor's arguments itself (no get_config of our own is needed)
    from core.segmentation.tfsetup import configure_tensorflow

    configure_tensorflow()
    layer_class = blur_max_layer_class()
    layer = layer_class((2, 2), name="pool_a")
    config = layer.get_config()
    assert config["pool_size"] == (2, 2) and config["name"] == "pool_a"
    clone = layer_class.from_config(config)
    x = np.random.default_rng(2).normal(size=(1, 6, 4, 2)).astype(np.float32)
    assert clone.name == "pool_a"
    np.testing.assert_array_equal(np.asarray(clone(x)), np.asarray(layer(x)))


def test_blurmax_rejects_other_pool_sizes_and_unknown_kinds():
    from core.segmentation.tfsetup import configure_tensorflow

    configure_tensorflow()
    with pytest.raises(ValueError, match="pool size"):
        blur_max_layer_class()((3, 3))
    with pytest.raises(ValueError, match="unknown pooling"):
        with stardist_pooling("avg"):
            pass
    assert POOLINGS == ("max", "blurmax")


def test_networks_built_inside_the_context_use_blurmax_and_load_max_pooling_weights(tmp_path):
    from core.segmentation.tfsetup import configure_tensorflow

    configure_tensorflow()
    from stardist.models import Config2D, StarDist2D

    config = Config2D(n_channel_in=1, **SMALL)
    plain = StarDist2D(config, name="plain", basedir=str(tmp_path))
    with stardist_pooling("blurmax"):
        blur = StarDist2D(config, name="blur", basedir=str(tmp_path))
    after = StarDist2D(config, name="after", basedir=str(tmp_path))
    # grid pooling (1) + U-Net down path (unet_n_depth = 2)
    assert pool_layers(plain.keras_model) == ["MaxPooling2D"] * 3 == pool_layers(after.keras_model)
    assert pool_layers(blur.keras_model) == ["BlurMaxPool2D"] * 3
    blur.keras_model.set_weights(plain.keras_model.get_weights())  # no parameters in either pooling
    x = np.random.default_rng(1).uniform(size=(1, 32, 32, 1)).astype(np.float32)
    prob_plain, prob_blur = plain.keras_model.predict(x, verbose=0)[0], blur.keras_model.predict(x, verbose=0)[0]
    assert prob_plain.shape == prob_blur.shape == (1, 16, 16, 1)
    assert not np.allclose(prob_plain, prob_blur)  # the pooling really changed


def test_the_context_restores_max_pooling_after_an_error(tmp_path):
    import csbdeep.internals.blocks as blocks

    before = blocks.MaxPooling2D
    with pytest.raises(RuntimeError):
        with stardist_pooling("blurmax"):
            assert blocks.MaxPooling2D is not before
            raise RuntimeError("boom")
    assert blocks.MaxPooling2D is before


def test_the_shipped_blurmax_model_loads_with_blurmax_and_records_its_start():
    from core.segmentation.stardist_models import load_stardist

    meta = json.loads((MODELS_DIR / "monuseg_he_blurmax" / "biocodec.json").read_text())
    assert meta["pooling"] == "blurmax" and meta["started_from"].endswith("monuseg_he_121ep")
    assert set(pool_layers(load_stardist("monuseg_he_blurmax").keras_model)) == {"BlurMaxPool2D"}


def test_a_model_folder_saying_blurmax_is_loaded_with_blurmax(tmp_path):
    from core.segmentation.stardist_models import load_stardist

    source = MODELS_DIR / "monuseg_he_121ep"
    folder = tmp_path / "blur_copy"
    shutil.copytree(source, folder)
    meta = json.loads((folder / "biocodec.json").read_text())
    assert model_pooling(source) == meta.get("pooling", "max")
    meta["pooling"] = "blurmax"
    (folder / "biocodec.json").write_text(json.dumps(meta))
    assert model_pooling(folder) == "blurmax"
    assert set(pool_layers(load_stardist(str(folder)).keras_model)) == {"BlurMaxPool2D"}
    (folder / "biocodec.json").unlink()
    assert model_pooling(folder) == "max"


def test_a_continued_training_keeps_the_start_models_pooling_unless_told_otherwise():
    from core.segmentation.train_stardist import training_pooling

    assert training_pooling(None, None) == "max"
    assert training_pooling(None, MODELS_DIR / "monuseg_he_blurmax") == "blurmax"
    assert training_pooling(None, MODELS_DIR / "monuseg_he_121ep") == "max"
    assert training_pooling("blurmax", MODELS_DIR / "monuseg_he_121ep") == "blurmax"
    assert training_pooling("max", MODELS_DIR / "monuseg_he_blurmax") == "max"
