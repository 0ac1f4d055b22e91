"""The seeds' CNNs and Keras model variants, built small for tests (Keras 3)."""

from __future__ import annotations

import keras
from keras import layers


def seed_random_cnn(input_shape=(300, 451, 3)) -> keras.Model:
    """Seed 000: four random Conv/ReLU/MaxPool layers, 9 filters, kernels 5/5/5/3, pools 4/3/2."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(9, 5), layers.Activation("relu"), layers.MaxPooling2D(4),
            layers.Conv2D(9, 5), layers.Activation("relu"), layers.MaxPooling2D(3),
            layers.Conv2D(9, 5), layers.Activation("relu"), layers.MaxPooling2D(2),
            layers.Conv2D(9, 3), layers.Activation("relu"),
        ],
        name="seed_random_cnn",
    )  # fmt: skip


def vgg16_style(input_shape=(48, 48, 3)) -> keras.Model:
    """Seed 001: VGG16's conv stack (64-64-pool-128-128-pool-256x3-pool-512x3-pool-512x3-pool), dense head."""
    inp = keras.Input(input_shape, name="image")
    x = inp
    for block, (filters, n) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, n + 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{block}_conv{i}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    return keras.Model(inp, layers.Dense(10, name="predictions")(x), name="vgg16_style")


def lenet5(input_shape=(28, 28, 1)) -> keras.Model:
    """Seed 002: LeNet-5 on 28×28×1."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(6, 5, padding="same", activation="tanh", name="C1"), layers.AveragePooling2D(2, name="S2"),
            layers.Conv2D(16, 5, activation="tanh", name="C3"), layers.AveragePooling2D(2, name="S4"),
            layers.Conv2D(120, 5, activation="tanh", name="C5"), layers.Flatten(),
            layers.Dense(84, activation="tanh", name="F6"), layers.Dense(10, activation="softmax", name="output"),
        ],
        name="lenet5",
    )  # fmt: skip


def cats_vs_dogs(input_shape=(150, 150, 3)) -> keras.Model:
    """Seed 004: Conv 16/32/64 'same' + MaxPool + Dropout + Dense."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(16, 3, padding="same", activation="relu"), layers.MaxPooling2D(), layers.Dropout(0.2),
            layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(), layers.Dropout(0.2),
            layers.Flatten(), layers.Dense(32, activation="relu"), layers.Dense(1),
        ],
        name="cats_vs_dogs",
    )  # fmt: skip


def nested(input_shape=(32, 32, 3)) -> keras.Model:
    """A functional model holding a Sequential block whose layer names repeat the outer ones."""
    block = keras.Sequential(
        [keras.Input((16, 16, 8)), layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
         layers.DepthwiseConv2D(3, padding="same", name="dw")],
        name="block",
    )  # fmt: skip
    inp = keras.Input(input_shape, name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv")(inp)
    x = layers.BatchNormalization(name="bn")(x)
    x = block(x)
    x = layers.SeparableConv2D(6, 3, padding="same", activation="relu", name="sep")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(3, name="head")(x), name="nested")


def zero_padding(data_format: str = "channels_first") -> keras.Model:
    """Seed 001's start, small: ZeroPadding2D before a biased Conv2D (tf2onnx folds the padding
    into the conv and, channels_first, leaves the bias as a separate Add), LeakyReLU, MaxPooling2D,
    then Flatten, Dense, LeakyReLU, Dropout, Dense and a softmax Activation."""
    shape = (1, 20, 18) if data_format == "channels_first" else (20, 18, 1)
    return keras.Sequential(
        [
            keras.Input(shape), layers.ZeroPadding2D(1, data_format=data_format, name="zero_padding2d"),
            layers.Conv2D(4, 3, data_format=data_format, bias_initializer=keras.initializers.Constant(0.5), name="conv2d"),
            layers.LeakyReLU(0.01, name="leaky_re_lu"), layers.MaxPooling2D(2, data_format=data_format, name="max_pooling2d"),
            layers.Conv2D(6, 3, data_format=data_format, bias_initializer="ones", name="conv2d_1"), layers.Flatten(name="flatten"),
            layers.Dense(8, name="dense"), layers.LeakyReLU(0.01, name="leaky_re_lu_1"), layers.Dropout(0.5, name="dropout"),
            layers.Dense(3, name="dense_1"), layers.Activation("softmax", name="activation"),
        ],
        name=f"zero_padding_{data_format}",
    )  # fmt: skip
