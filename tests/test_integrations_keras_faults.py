"""The Keras StateSpaceCallback beside probes the user attached before it: they
stay, and count exactly (against NumPy on the layers' own outputs)."""

import keras
import numpy as np
from reference import Expected, assert_counts_match

from tensorstate_callbacks.keras import StateSpaceCallback, build_efficiency_model
from tensorstate_callbacks.lenet5_keras import build_lenet5, compile_lenet5, mnist_images

(X_TRAIN, Y_TRAIN), (X_VALID, Y_VALID) = mnist_images(limit=200)
X_VALID, Y_VALID = X_VALID[:60], Y_VALID[:60]
CONVS = ["conv_1", "conv_2"]


def test_callback_keeps_probes_the_user_attached_before_it(tmp_path):
    net = compile_lenet5(build_lenet5(seed=0), lr=0.01)
    probed = build_efficiency_model(net, attach_to=CONVS)
    users = list(probed.efficiency_layers)
    callback = StateSpaceCallback((X_VALID, Y_VALID), attach_to=["Conv2D"], log_dir=tmp_path)
    probed.fit(X_TRAIN, Y_TRAIN, validation_data=(X_VALID, Y_VALID), epochs=2, batch_size=50,
               verbose=0, callbacks=[callback])
    assert list(probed.efficiency_layers) == users
    assert [p.name for p in users] == [f"{name}_states" for name in CONVS]
    assert len(callback.history) == 2
    # they counted during fit (2 epochs of 200 training images at least) ...
    per_image = [int(np.prod(probed.get_layer(n).output.shape[1:-1])) for n in CONVS]
    assert all(p.state_count >= 2 * 200 * k for p, k in zip(users, per_image, strict=True))
    # ... and still count, exactly
    for probe in users:
        probe.reset_states()
    probed.predict(X_VALID, verbose=0)
    outputs = keras.Model(net.inputs, [net.get_layer(n).output for n in CONVS]).predict(
        X_VALID, verbose=0)
    for probe, values in zip(users, outputs, strict=True):
        assert_counts_match(probe, Expected.of_values(values))
