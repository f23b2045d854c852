"""Writes tiny run folders with the code before the redesign (commit a07cf10)."""
import json, pathlib, sys
sys.path.insert(0, ".")
import numpy as np, keras
import models, run_folder, training
root = pathlib.Path("tests/data/legacy_runs")
with np.load("data/mnist-20k.npz") as a:
    images = (a["x_test"][:8].astype("float32") / 255.0)[..., None]
keras.utils.set_random_seed(0)
for kind in ("vae", "ae"):
    arch = dict(latent_dim=2, encoder_filters=(4, 4, 4, 4), decoder_filters=(4, 4, 4), seed=0)
    model = models.build_model(kind, **arch)
    training.compile_model(model, 1e-3, 1000.0 if kind == "vae" else 0.0)
    # a few real steps so BN moving statistics and weights are not the initial ones
    model.fit(images, images, epochs=3, batch_size=4, verbose=0)
    out = root / kind
    out.mkdir(parents=True, exist_ok=True)
    run_folder.save_weights(model, out / run_folder.WEIGHTS_FILE)
    config = {"model": kind, "model_config": model.get_config(),
              "training": {"epochs": 3, "batch_size": 4, "learning_rate": 1e-3, "lr_schedule": "constant",
                           "reconstruction_weight": 1000.0 if kind == "vae" else None, "seed": 0,
                           "train_limit": 8, "digits": None, "train_images": 8, "precision": "float32",
                           "wall_seconds": 1.0, "resumed": False},
              "data": {"path": None, "source": "bundled"}, "backend": "tensorflow",
              "keras_version": keras.__version__}
    run_folder.write_json(out / run_folder.CONFIG_FILE, config)
    np.savez(out / "expected_outputs.npz", images=images, latents=model.encode(images),
             reconstructions=model.reconstruct(images))
    print(kind, sorted(p.name for p in out.iterdir()))
