"""GMAI-VL training: dataset construction, model assembly, three-stage training, evaluation."""
