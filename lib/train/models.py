"""Classifiers for 28x28 grey images, selectable by name in the config (`train.model`).

Every model takes float [B, 1, 28, 28] in [0, 1] (convnet and small_convnet normalise
internally; oe_convnet takes [0, 1] as its authors trained it), so data can stay
uint8-derived and augmentations work in [0, 1]. Every model exposes
`features(x)` -> penultimate features [B, D] and `head(features)` -> logits, with
`forward(x) == head(features(x))` (the Mahalanobis score needs the features).

    from lib.train.models import build_model, MODELS
    model = build_model("oe_convnet", num_classes=10)   # the default (config.yaml)
    logits = model(torch.rand(8, 1, 28, 28))
    model_mflops("convnet")   # multiply-adds x 2 per image, forward pass
"""
import pickle
import zipfile

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.common import replace_atomic


class Classifier(nn.Module):
    def __init__(self, body, feature_dim, num_classes):
        super().__init__()
        self.body = body
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x):
        # MNIST's pixel mean/std; a fixed affine map, so it does not depend on the data set.
        return self.body((x - 0.1307) / 0.3081)

    def forward(self, x):
        return self.head(self.features(x))


def _conv_bn(cin, cout, k, batch_norm=True):
    if not batch_norm:  # a bias takes the place of batch norm's shift
        return [nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True)]
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _linear_bn(cin, cout, batch_norm=True):
    if not batch_norm:
        return [nn.Linear(cin, cout), nn.ReLU(inplace=True)]
    return [nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True)]


def convnet(num_classes=10):
    """Two 5x5 conv layers (32, 64 channels, "same" padding) with batch norm and 2x2 max
    pooling, a 1024-unit batch-normed hidden layer with dropout 0.3, and a linear head.

    The layer sizes follow hwalsuklee/tensorflow-mnist-cnn (cnn_model.py: conv 5x5x32,
    pool, conv 5x5x64, pool, FC 1024, batch norm on every hidden layer, dropout on the FC
    layer); there the dropout is 0.5 and the input is centred as (x - 0.5), and its
    README's 99.61% single-model MNIST accuracy comes with rotation/shift augmentation
    (5x the training data), which this project does not use. Batch norm makes it
    confident far from the data: as a Base model its MSP misses Gaussian and
    Bernoulli noise (docs/baselines.md), so it is an option, not the default. About 28 MFLOPs per image.
    """
    body = nn.Sequential(
        *_conv_bn(1, 32, 5), nn.MaxPool2d(2),
        *_conv_bn(32, 64, 5), nn.MaxPool2d(2),
        nn.Flatten(),
        *_linear_bn(64 * 7 * 7, 1024),
        nn.Dropout(0.3),
    )
    return Classifier(body, 1024, num_classes)


def small_convnet(num_classes=10, batch_norm=True):
    """A cheaper batch-norm variant: 3x3 convolutions (16, 32, 64 channels) with batch
    norm, pooling after each, and a 128-unit batch-normed hidden layer. Designed here,
    after no published network. Like convnet it grows confident on noise far from the
    data (docs/baselines.md). About 4 MFLOPs per image.
    """
    body = nn.Sequential(
        *_conv_bn(1, 16, 3, batch_norm), nn.MaxPool2d(2),
        *_conv_bn(16, 32, 3, batch_norm), nn.MaxPool2d(2),
        *_conv_bn(32, 64, 3, batch_norm), nn.MaxPool2d(2, ceil_mode=True),
        nn.Flatten(),
        *_linear_bn(64 * 4 * 4, 128, batch_norm),
    )
    return Classifier(body, 128, num_classes)


def small_convnet_nobn(num_classes=10):
    """small_convnet with every batch-norm layer left out (each conv and linear layer gets a
    bias instead): the ablation that shows batch norm, not the layers, makes small_convnet's
    Base model confident on pure noise (docs/baselines.md). About 4 MFLOPs per image.
    """
    return small_convnet(num_classes, batch_norm=False)


def gelu_sigmoid(x):
    """GELU in its sigmoid approximation x * sigmoid(1.702 x), as the Outlier Exposure code has it."""
    return x * torch.sigmoid(1.702 * x)


class OEConvNet(nn.Module):
    """The network of Outlier Exposure's MNIST experiments (Hendrycks, Mazeika, Dietterich,
    ICLR 2019), as in hendrycks/outlier-exposure, MNIST/models/convnet.py:
    conv1 5x5 (10) -> max-pool 2 -> GELU; conv2 5x5 (20) -> Dropout2d(0.5) -> max-pool 2 ->
    GELU; flatten (320); fc1 (50) -> GELU; fc2 (num_classes). No padding, no batch norm,
    no input normalisation: it takes [0, 1] pixels as the authors fed it (torchvision's
    ToTensor). The parameter names are theirs (conv1.*, conv2.*, fc1.*, fc2.*), so the
    authors' state dicts load with strict=True. About 1 MFLOP per image.
    """

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.conv2_drop = nn.Dropout2d(0.5)
        self.fc1 = nn.Linear(320, 50)
        self.fc2 = nn.Linear(50, num_classes)

    @property
    def head(self):
        # The last layer under the project's name for it; a property, not a second
        # registered module, so the state dict keeps the authors' keys only.
        return self.fc2

    def features(self, x):
        x = gelu_sigmoid(F.max_pool2d(self.conv1(x), 2))
        x = gelu_sigmoid(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        return gelu_sigmoid(self.fc1(x.flatten(1)))

    def forward(self, x):
        return self.head(self.features(x))


def oe_convnet(num_classes=10):
    return OEConvNet(num_classes)


MODELS = {"oe_convnet": oe_convnet, "convnet": convnet, "small_convnet": small_convnet,
          "small_convnet_nobn": small_convnet_nobn}


def build_model(name, num_classes=10):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](num_classes)


def model_mflops(name, num_classes=10):
    """Forward-pass FLOPs per image (2 x multiply-adds of conv and linear layers), in millions."""
    model = build_model(name, num_classes).eval()
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs.append(output.numel() * k)
        elif isinstance(module, nn.Linear):
            macs.append(output.numel() * module.in_features)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    return 2 * sum(macs) / 1e6


def to_device_images(x_uint8, device):
    return torch.from_numpy(np.ascontiguousarray(x_uint8)).to(device).unsqueeze(1).float().div_(255.0)


def save_torch_atomic(path, obj):
    def write(tmp):
        # Through a file object: given a path, torch.save names the records inside its zip
        # after the (temporary) file name, and identical models would differ byte-wise.
        with open(tmp, "wb") as f:
            torch.save(obj, f)
    replace_atomic(path, write)


class UnsafeFileError(pickle.UnpicklingError):
    pass


class DamagedFileError(ValueError):
    pass


# The first bytes of torch's legacy (pre-1.6, non-zip) format: pickle protocol 2, then the
# format's magic number 0x1950a86a20f9469cfc6c as a pickled long. Published checkpoints,
# such as the Outlier Exposure authors' MNIST ones, are stored that way.
LEGACY_TORCH_HEADER = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def is_torch_file(path):
    """True for torch.save's zip container or its legacy format; False for other bytes."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as f:
        return f.read(len(LEGACY_TORCH_HEADER)) == LEGACY_TORCH_HEADER


def load_weights_only(path, device="cpu"):
    """torch.load(path, weights_only=True), with a message that does not invite turning that off."""
    # torch.load falls back to reading any file that is not a zip as a bare pickle, so random
    # or cut-off bytes would be reported as pickled code: look at the container first.
    if not is_torch_file(path):
        raise DamagedFileError(
            f"{path}: damaged or truncated: not a torch file (this project writes them as zip archives). "
            f"Delete it and rerun the same command; the training job writes it again.")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DamagedFileError(
            f"{path}: damaged or truncated ({first}). Delete it and rerun the same command; the training "
            f"job writes it again.") from None
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise UnsafeFileError(
            f"{path}: refusing to load: it holds pickled objects other than tensors and plain values "
            f"({first}). This project's model and checkpoint files never do; the file was written "
            f"by other code or tampered with. Delete it and rerun the training job.") from None


def to_fast_layout(model):
    """The model with its convolution weights (and so its activations) channels-last.

    oneDNN on the CPU and cuDNN on the GPU run convolutions faster on NHWC data: on the
    project's 2-core CPU, training steps of small_convnet take 1.8x less time, convnet
    1.3x; inference 2x and 1.7x. Single-channel input batches already qualify as NHWC.
    The weights keep their values; only their memory order changes.
    """
    return model.to(memory_format=torch.channels_last)


class StandardizedInput(nn.Module):
    """A network trained on (x - 0.1307) / 0.3081, fed the project's [0, 1] pixels.

    For external checkpoints whose `input` is mnist_standardized; `features` and `head`
    pass through, so every score works unchanged.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    @property
    def head(self):
        return self.net.head

    def features(self, x):
        return self.net.features((x - 0.1307) / 0.3081)

    def forward(self, x):
        return self.head(self.features(x))


def load_model_file(path, device="cpu"):
    """Load a model.pt written by this module; refuses pickled code (weights_only=True).

    An external checkpoint's file (lib.train.external) also names its input convention;
    a network trained on standardised pixels is wrapped to take [0, 1] ones.
    """
    blob = load_weights_only(path, device)
    model = build_model(blob["model_name"], int(blob["num_classes"]))
    model.load_state_dict(blob["state_dict"])
    if blob.get("input_convention", "unit") == "mnist_standardized":
        model = StandardizedInput(model)
    return to_fast_layout(model.to(device)).eval(), blob
