"""ImageNet's per-channel statistics, on the 0..1 scale: the input normalisation of networks pretrained on it
(`segkit.models`) and the default normalisation of the data (`segkit.data`), which both import them from here."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
