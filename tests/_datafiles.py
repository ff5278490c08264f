"""Tiny data files in the real formats of the benchmark datasets, for the ``--quick`` runs of the
benchmark specs: MNIST / Fashion-MNIST IDX files, CIFAR-10 python batches and an ImageNet-layout
folder of JPEGs. The writers are those of the data tests (independent of biofa's readers)."""

from test_data import write_cifar, write_mnist
from test_data_images import write_folder


def write_benchmark_data(root, *, n_train=256, n_test=128, n_images=4, image_size=(40, 36)):
    """Write every benchmark dataset under ``root`` in the layout ``biofa.data.load`` searches:
    ``root/mnist``, ``root/fashion_mnist``, ``root/cifar-10-batches-py`` (``n_train`` images in
    each of its five training batches) and ``root/imagenet/{train,val}/<class>/*.JPEG`` (three
    classes of ``n_images`` training and 2 validation images). Returns ``root``."""
    write_mnist(root / "mnist", n_train=n_train, n_test=n_test, seed=1)
    write_mnist(root / "fashion_mnist", n_train=n_train, n_test=n_test, seed=2)
    write_cifar(root / "cifar-10-batches-py", n=n_train, seed=3)
    write_folder(root / "imagenet", classes={"n01": n_images, "n02": n_images, "n03": n_images},
                 size=image_size, seed=4)
    return root
