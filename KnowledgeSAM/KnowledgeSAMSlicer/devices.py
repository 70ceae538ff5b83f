"""What the device combo offers: the GPUs PyTorch sees (name and memory), Apple MPS, and the CPU.

Why show names and memory: "GPU not found" and out-of-memory are the second most common complaint
about AI extensions; the user should see which device will run and how much memory it has before
pressing Apply. Why two lists: importing torch costs seconds, and the panel opens for users who may never
run it, so it first offers :func:`defaultDevices` (no torch); :func:`availableDevices` imports torch, only
when the user opens the device list (and only if it is installed; never installed from here).
"""

import importlib.util
from dataclasses import dataclass

__all__ = ["DeviceChoice", "availableDevices", "defaultDevices", "torchInstalled", "LOW_GPU_MEMORY_GB"]

LOW_GPU_MEMORY_GB = 4.0  # below this, the status line suggests a smaller batch or the CPU


@dataclass(frozen=True)
class DeviceChoice:
    label: str  # shown in the combo
    value: str  # passed to the engine: auto, cpu, cuda:N, mps
    tooltip: str = ""
    memoryGB: float = 0.0


def torchInstalled():
    return importlib.util.find_spec("torch") is not None


def defaultDevices(saved=None):
    """The choices offered before torch is imported: ``auto``, the CPU, and a remembered ``saved`` choice such as
    ``cuda:1`` (its name and memory appear once the device list is opened)."""
    choices = [DeviceChoice("auto (GPU if PyTorch finds one)", "auto",
                            "The first GPU PyTorch finds, else the CPU. Open 'Model and device' to see your GPUs."),
               DeviceChoice("CPU", "cpu", "Runs everywhere; slow for large volumes.")]
    if saved and saved not in ("auto", "cpu"):
        choices.insert(1, DeviceChoice(f"{saved} (remembered)", saved, "Open 'Model and device' to check it."))
    return choices


def availableDevices():
    """Choices for the device combo, best first (``auto`` resolves like the engine: CUDA, MPS, CPU)."""
    if not torchInstalled():
        return [DeviceChoice("auto (PyTorch not installed yet)", "auto",
                             "Install the dependencies first; the device list then shows your GPU(s)."),
                DeviceChoice("CPU", "cpu", "Runs everywhere; slow for large volumes.")]
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            memory = properties.total_memory / 1024 ** 3
            gpus.append(DeviceChoice(f"GPU {index}: {properties.name} ({memory:.1f} GB)", f"cuda:{index}",
                                     f"CUDA {torch.version.cuda}, {memory:.1f} GB", memory))
    mps = getattr(torch.backends, "mps", None)
    hasMps = mps is not None and mps.is_available()
    if gpus:
        best = gpus[0]
        auto = DeviceChoice(f"auto: {best.label}", "auto", best.tooltip, best.memoryGB)
    elif hasMps:
        auto = DeviceChoice("auto: Apple GPU (MPS)", "auto")
    else:
        auto = DeviceChoice("auto: CPU (no GPU found by PyTorch)", "auto",
                            "PyTorch found no CUDA GPU. Check the NVIDIA driver, or reinstall PyTorch from the "
                            "PyTorch extension to get a CUDA build.")
    choices = [auto] + gpus
    if hasMps:
        choices.append(DeviceChoice("Apple GPU (MPS)", "mps"))
    choices.append(DeviceChoice("CPU", "cpu", "Runs everywhere; slow for large volumes."))
    return choices
