"""Losses beyond ``torch.nn.CrossEntropyLoss``, each a plain ``nn.Module`` chosen in YAML.

Every loss takes ``(logits, targets)`` with logits ``(N, C)`` and targets either
class indices ``(N,)`` or class probabilities ``(N, C)`` (MixUp, CutMix); the
distillation loss also takes the teacher's logits. Each is a leaf, imported from its
own module by its class path, so deleting one deletes nothing else.
"""
