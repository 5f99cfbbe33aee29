"""ResNet Explorer core: models, data, training, probes and checkpoints (no Streamlit here)."""
from .checkpoint import CheckpointError, list_checkpoints, load_pretrained, read_checkpoint
from .data import CLASSES, DatasetError
from .flops import count_macs, count_params, layer_table
from .models import build_model, list_models, model_info
from .predict import predict

__all__ = ["CLASSES", "CheckpointError", "DatasetError", "build_model", "count_macs", "count_params", "layer_table",
           "list_checkpoints", "list_models", "load_pretrained", "model_info", "predict", "read_checkpoint"]
