"""Bundled demo: a synthetic captioned shapes dataset and an automatic judge.

Submodules are deliberately light (numpy + PIL only) so importing the demo
data or judge never pulls in torch.
"""
