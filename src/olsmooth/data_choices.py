"""The data's choices that the training configuration offers: train/test splits, augmentation levels, input
normalisations, training-subset draws. They live in a module that imports nothing, so that `olsmooth.engine.config`
(and with it every command's parser) reads the very tuples the data package checks against without importing
`olsmooth.data`, which imports torchvision; `olsmooth.data.spec` re-exports them."""

# Training-set augmentation levels, mildest first; what each does per dataset is in docs/datasets.md.
AUGMENT_LEVELS = ("none", "light", "default")
# Input normalisations: each dataset's own mean/std, or ImageNet's, which pretrained weights were trained with.
INPUT_NORMS = ("dataset", "imagenet")
# Train/test splits of the datasets that offer a choice (the fine-grained sets): the paper's lists or the official one.
SPLITS = ("paper", "official")
# How --train-subset N picks its samples: a seeded draw that keeps the class proportions (stratified), or the
# first N samples in the dataset's order (first), as olsmooth did before the seeded draw (docs/datasets.md).
SUBSET_DRAWS = ("stratified", "first")
