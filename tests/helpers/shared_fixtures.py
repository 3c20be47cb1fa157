"""Where the shared real-data fixtures are, and skip marks for tests that need them.

    from tests.helpers.shared_fixtures import MNIST_SAMPLE, OE_CHECKPOINTS, needs_mnist_sample, needs_oe_checkpoints

../shared/fixtures (beside the checkout) holds 5,000 real MNIST digits (mnist-sample/) and the
Outlier Exposure authors' MNIST checkpoints (oe-mnist/); a checkout without them skips
those tests and says why.
"""
from pathlib import Path

import pytest

from tests.helpers import ROOT

SHARED = Path(ROOT).resolve().parent / "shared" / "fixtures"
MNIST_SAMPLE = SHARED / "mnist-sample"
OE_CHECKPOINTS = SHARED / "oe-mnist"
OE_CHECKPOINT_FILES = ("baseline_epoch_9.pt", "oe_scratch_epoch_9.pt", "oe_tune_epoch_4.pt")
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")

needs_mnist_sample = pytest.mark.skipif(
    not (MNIST_SAMPLE / "SHA256SUMS").exists(),
    reason=f"the real-digit sample is not at {MNIST_SAMPLE} (../shared/fixtures/mnist-sample beside the checkout)")
needs_oe_checkpoints = pytest.mark.skipif(
    not all((OE_CHECKPOINTS / name).exists() for name in OE_CHECKPOINT_FILES),
    reason=f"the Outlier Exposure checkpoints are not at {OE_CHECKPOINTS} (../shared/fixtures/oe-mnist)")
