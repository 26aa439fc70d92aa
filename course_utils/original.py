"""The assignment's original solution, copied faithfully — bugs included. Do not use it.

It is the course's specimen: one copy, shared by the checks' mistake-catalogue test (each
check must name the bug this code commits), and by the benchmarks, which time it as the
baseline. Its bugs, each taught in a notebook: ``torch.zeros(x.size())`` is CPU/float32-only;
``CustomReLU.apply`` is written into ``_modules`` for good (the next ``eval()`` or
``state_dict()`` crashes); hooks are never removed and ``register_backward_hook`` is
deprecated; ``squeeze()`` breaks a batch of one; PIL's ``resize`` gets (H, W) where it wants
(W, H); min-max runs over the whole batch (and 0/0 gives NaN); no ``model.eval()``; the
input's ``.grad`` accumulates; ``.backward()`` runs through the whole network. Every call
needs a fresh copy of the model, because it ruins the one it is given.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch.autograd import Function as TorchFunc


class CustomReLU(TorchFunc):
    @staticmethod
    def forward(self, x):
        output = torch.addcmul(torch.zeros(x.size()), x, (x > 0).type_as(x))
        self.save_for_backward(x, output)
        return output

    @staticmethod
    def backward(self, dout):
        x, output = self.saved_tensors
        grad_input = torch.zeros_like(dout)
        mask = (x > 0) & (dout > 0)
        grad_input = torch.addcmul(grad_input, mask.type_as(dout), dout, value=1)
        return grad_input


class OriginalGradCam:
    """The assignment's ``GradCam`` (renamed so it cannot be mistaken for ours)."""

    def guided_backprop(self, X_tensor, y_tensor, gc_model):
        for param in gc_model.parameters():
            param.requires_grad = True
        for idx, module in gc_model.features._modules.items():
            if module.__class__.__name__ == "ReLU":
                gc_model.features._modules[idx] = CustomReLU.apply
            elif module.__class__.__name__ == "Fire":
                for idx_c, child in gc_model.features[int(idx)].named_children():
                    if child.__class__.__name__ == "ReLU":
                        gc_model.features[int(idx)]._modules[idx_c] = CustomReLU.apply
        X_tensor.requires_grad_()
        scores = gc_model(X_tensor)
        y_tensor = y_tensor.view(-1, 1)
        scores = scores.gather(1, y_tensor).squeeze()
        scores.backward(torch.ones_like(scores), retain_graph=True)
        guided_gradients = X_tensor.grad.cpu().data.numpy()
        return np.transpose(guided_gradients, (0, 2, 3, 1))

    def grad_cam(self, X_tensor, y_tensor, gc_model):
        conv_module = gc_model.features[12]
        self.gradient_value = None
        self.activation_value = None

        def gradient_hook(a, b, gradient):
            self.gradient_value = gradient[0]

        def activation_hook(a, b, activation):
            self.activation_value = activation

        conv_module.register_forward_hook(activation_hook)
        conv_module.register_backward_hook(gradient_hook)
        scores = gc_model(X_tensor)
        y_tensor = y_tensor.view(-1, 1)
        scores = scores.gather(1, y_tensor).squeeze()
        scores.backward(torch.ones_like(scores), retain_graph=True)
        activations = self.activation_value.detach()
        gradients = self.gradient_value.detach()
        pooled_gradients = torch.mean(gradients, dim=[2, 3], keepdim=True)
        cam = torch.sum(pooled_gradients * activations, dim=1, keepdim=True)
        cam = torch.nn.functional.relu(cam)
        cam = cam.cpu().detach().numpy()
        cam = np.squeeze(cam)
        cam_scaled = []
        for i in range(cam.shape[0]):
            cam_scaled.append(
                np.array(Image.fromarray(cam[i]).resize(X_tensor[i, 0, :, :].shape, Image.BICUBIC))
            )
        cam = np.array(cam_scaled)
        cam -= np.min(cam)
        cam /= np.max(cam)
        return cam
