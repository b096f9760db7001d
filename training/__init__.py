"""Differentially private knowledge distillation of the served student model."""
