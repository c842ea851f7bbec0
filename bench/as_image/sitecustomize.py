"""Imported at start-up by every Python process whose PYTHONPATH holds this folder: applies
bench/gpu_image.py's hook as SDAAS_AS_IMAGE says (hide what the GPU image lacks, or record
what is imported). Loaded by path, so bench/ is not put on sys.path."""

import importlib.util
import os

if os.environ.get("SDAAS_AS_IMAGE"):
    _bench = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _path = os.path.join(_bench, "gpu_image.py")
    _spec = importlib.util.spec_from_file_location("_sdaas_gpu_image", _path)
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    _mod.from_env()
