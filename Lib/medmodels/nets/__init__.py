"""Networks: ShaSpec and its 3D U-Net baseline (segmentation), M2DN and its regression baseline (synthesis)."""
